//! SQL for every client: the Postgres wire protocol (`pgwire`) over the
//! same read-only DataFusion catalog as `POST /v1/sql` and `twinflow sql`.
//!
//! ```text
//!  psql, drivers, BI tools ──TCP──▶ pgwire (startup, simple and extended query)
//!                                     └─▶ Store::sql: one committed epoch, read-only
//!                                           └─▶ Arrow batches ─▶ typed rows (text or binary)
//! ```
//!
//! Both query protocols are served: psql's simple queries, and the
//! extended protocol drivers use (parse, bind, describe, execute). Bound
//! parameters are not supported (a statement with `$1` is refused), and a
//! statement is described by running it (the schema of its answer), since
//! answers are per epoch and cheap to plan. Integers, floats, booleans and
//! strings travel as their Postgres types, in the format the client asks
//! for; every other Arrow type (timestamps, lists, the embedding vectors)
//! as text, as DataFusion prints it. Errors carry a SQLSTATE: `25006`
//! (read-only) for statements that would change anything, `42601` for the
//! rest of what DataFusion refuses.
//!
//! A client logs in with an API key that has the `read` scope, in one of
//! two ways, chosen by the user name it sends:
//!
//! ```text
//!  user = a key's name, and the key has a `scram` verifier ─▶ SCRAM-SHA-256 (-PLUS over TLS):
//!                                                             the key never crosses the network
//!  any other user name                                     ─▶ the key as the password (`password`)
//! ```
//!
//! Either way the key's scope is checked once the key is proven. With
//! `[server.tls]` the endpoint speaks TLS (after an `SSLRequest`, or
//! directly with ALPN `postgresql`), refuses every login on a connection
//! without it (`sslmode=require` or stricter), and offers channel binding
//! (`SCRAM-SHA-256-PLUS`, `tls-server-end-point`), which ties the proof to
//! this server's certificate. Without TLS, a password login sends the key in
//! clear: keep the port on loopback or a trusted network, or give the keys
//! verifiers. With `[auth] mode = "none"` (loopback only) no key is asked.

use std::fmt::Debug;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type};
use arrow::datatypes::{UInt8Type, UInt16Type, UInt32Type, UInt64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use futures_util::stream;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DataRowEncoder, DescribePortalResponse, DescribeStatementResponse, FieldInfo, QueryResponse, Response,
};
use pgwire::api::stmt::{NoopQueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::DataRow;
use twinflow_sinks::{SqlAnswer, Store};

use crate::auth::Gate;

mod login;
mod socket;

use login::Startup;

/// The handlers of one server; cheap to share between connections.
pub struct PgServer {
    store: Arc<Store>,
    parser: Arc<NoopQueryParser>,
    startup: Arc<Startup>,
    /// Longest time a query may run.
    timeout: std::time::Duration,
    gate: Arc<Gate>,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    /// The search functions' encoder (`knn`, `hybrid`, `embed`); without it
    /// statements read the tables only.
    search: Option<Arc<dyn twinflow_sinks::QueryEncoder>>,
}

impl Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer")
            .field("startup", &self.startup)
            .field("timeout", &self.timeout)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl PgServer {
    /// A server over `store`'s tables, logging clients in by `gate`'s keys;
    /// a query running longer than `timeout` is cancelled.
    pub fn new(store: Arc<Store>, timeout: std::time::Duration, gate: Arc<Gate>) -> Self {
        let startup = Arc::new(Startup::new(&gate, None));
        Self { store, parser: Arc::new(NoopQueryParser::new()), startup, timeout, gate, tls: None, search: None }
    }

    /// This server, answering the search functions of SQL with `encoder`.
    pub fn with_search(mut self, encoder: Arc<dyn twinflow_sinks::QueryEncoder>) -> Self {
        self.search = Some(encoder);
        self
    }

    /// This server, speaking TLS with `config` to the clients that ask for
    /// it and logging in only those; `certificate` (PEM, the server's
    /// certificate first) is what SCRAM's channel binding binds to.
    pub fn with_tls(mut self, config: Arc<tokio_rustls::rustls::ServerConfig>, certificate: &[u8]) -> Self {
        self.tls = Some(pgwire::tokio::TlsAcceptor::from(config));
        self.startup = Arc::new(Startup::new(&self.gate, Some(certificate)));
        self
    }

    /// Serves connections from `listener` until the task is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener) {
        let server = Arc::new(self);
        loop {
            match listener.accept().await {
                Ok((socket, peer)) => {
                    let (server, tls) = (server.clone(), server.tls.clone());
                    tokio::spawn(async move {
                        if let Err(error) = socket::serve(socket, tls, server).await {
                            tracing::debug!(%peer, %error, "postgres connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "postgres listener: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn answer(&self, sql: &str) -> PgWireResult<SqlAnswer> {
        if has_parameters(sql) {
            return Err(user_error("0A000", "bound parameters ($1, …) are not supported: inline the values".into()));
        }
        let run = async {
            match &self.search {
                Some(encoder) => self.store.sql_with(sql, encoder.clone()).await,
                None => self.store.sql(sql).await,
            }
        };
        let answer = tokio::time::timeout(self.timeout, run).await.map_err(|_| {
            user_error("57014", format!("the query ran longer than {:?} and was cancelled", self.timeout))
        })?;
        answer.map_err(|e| match e {
            twinflow_sinks::Error::SqlNotReadOnly(message) => user_error("25006", message),
            twinflow_sinks::Error::SqlLimit(message) => user_error("54000", message),
            other => user_error("42601", other.to_string()),
        })
    }
}

fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".to_owned(), code.to_owned(), message)))
}

/// Whether `sql` has a `$n` placeholder outside quotes.
fn has_parameters(sql: &str) -> bool {
    let mut quote = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '$') if chars.peek().is_some_and(char::is_ascii_digit) => return true,
            _ => {}
        }
    }
    false
}

/// The Postgres type an Arrow column travels as.
fn pg_type(data_type: &DataType) -> Type {
    match data_type {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => Type::INT8,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        _ => Type::TEXT,
    }
}

fn fields(answer: &SqlAnswer, format: &Format) -> Vec<FieldInfo> {
    answer
        .schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            FieldInfo::new(field.name().clone(), None, None, pg_type(field.data_type()), format.format_for(i))
        })
        .collect()
}

/// The rows of `answer`, encoded for `fields`.
fn rows(answer: &SqlAnswer, fields: &Arc<Vec<FieldInfo>>) -> PgWireResult<Vec<PgWireResult<DataRow>>> {
    let mut out = Vec::new();
    let mut encoder = DataRowEncoder::new(fields.clone());
    for batch in &answer.batches {
        let columns = Columns::new(batch)?;
        for row in 0..batch.num_rows() {
            for column in &columns.0 {
                column.encode(&mut encoder, row)?;
            }
            out.push(Ok(encoder.take_row()));
        }
    }
    Ok(out)
}

/// How values without a Postgres type of their own are printed.
static TEXT_FORMAT: FormatOptions<'static> = FormatOptions::new();

/// One batch's columns, each ready to encode a row's value.
struct Columns<'a>(Vec<Column<'a>>);

enum Column<'a> {
    Int(&'a dyn Array, fn(&dyn Array, usize) -> i64, Type),
    Float(&'a dyn Array, fn(&dyn Array, usize) -> f64, Type),
    Bool(&'a dyn Array),
    Text(&'a dyn Array, ArrayFormatter<'a>),
}

impl<'a> Columns<'a> {
    fn new(batch: &'a RecordBatch) -> PgWireResult<Self> {
        let columns = batch
            .columns()
            .iter()
            .map(|array| {
                let array: &dyn Array = array.as_ref();
                let ty = pg_type(array.data_type());
                Ok(match array.data_type() {
                    DataType::Int8 => Column::Int(array, |a, i| a.as_primitive::<Int8Type>().value(i).into(), ty),
                    DataType::Int16 => Column::Int(array, |a, i| a.as_primitive::<Int16Type>().value(i).into(), ty),
                    DataType::Int32 => Column::Int(array, |a, i| a.as_primitive::<Int32Type>().value(i).into(), ty),
                    DataType::Int64 => Column::Int(array, |a, i| a.as_primitive::<Int64Type>().value(i), ty),
                    DataType::UInt8 => Column::Int(array, |a, i| a.as_primitive::<UInt8Type>().value(i).into(), ty),
                    DataType::UInt16 => Column::Int(array, |a, i| a.as_primitive::<UInt16Type>().value(i).into(), ty),
                    DataType::UInt32 => Column::Int(array, |a, i| a.as_primitive::<UInt32Type>().value(i).into(), ty),
                    // Above i64::MAX saturates: such counts do not occur in these tables.
                    DataType::UInt64 => Column::Int(
                        array,
                        |a, i| i64::try_from(a.as_primitive::<UInt64Type>().value(i)).unwrap_or(i64::MAX),
                        ty,
                    ),
                    DataType::Float32 => {
                        Column::Float(array, |a, i| a.as_primitive::<Float32Type>().value(i).into(), ty)
                    }
                    DataType::Float64 => Column::Float(array, |a, i| a.as_primitive::<Float64Type>().value(i), ty),
                    DataType::Boolean => Column::Bool(array),
                    _ => Column::Text(
                        array,
                        ArrayFormatter::try_new(array, &TEXT_FORMAT).map_err(|e| user_error("XX000", e.to_string()))?,
                    ),
                })
            })
            .collect::<PgWireResult<_>>()?;
        Ok(Self(columns))
    }
}

impl Column<'_> {
    fn encode(&self, encoder: &mut DataRowEncoder, row: usize) -> PgWireResult<()> {
        match self {
            Self::Int(array, value, ty) => {
                let value = array.is_valid(row).then(|| value(*array, row));
                match *ty {
                    Type::INT2 => encoder.encode_field(&value.map(|v| v as i16)),
                    Type::INT4 => encoder.encode_field(&value.map(|v| v as i32)),
                    _ => encoder.encode_field(&value),
                }
            }
            Self::Float(array, value, ty) => {
                let value = array.is_valid(row).then(|| value(*array, row));
                if *ty == Type::FLOAT4 {
                    encoder.encode_field(&value.map(|v| v as f32))
                } else {
                    encoder.encode_field(&value)
                }
            }
            Self::Bool(array) => encoder.encode_field(&array.is_valid(row).then(|| array.as_boolean().value(row))),
            Self::Text(array, formatter) => {
                encoder.encode_field(&array.is_valid(row).then(|| formatter.value(row).to_string()))
            }
        }
    }
}

fn query_response(answer: &SqlAnswer, format: &Format) -> PgWireResult<Response> {
    let fields = Arc::new(fields(answer, format));
    let rows = rows(answer, &fields)?;
    Ok(Response::Query(QueryResponse::new(fields, stream::iter(rows))))
}

#[async_trait]
impl SimpleQueryHandler for PgServer {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + futures_util::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as futures_util::Sink<PgWireBackendMessage>>::Error>,
    {
        let answer = self.answer(query).await?;
        Ok(vec![query_response(&answer, &Format::UnifiedText)?])
    }
}

#[async_trait]
impl ExtendedQueryHandler for PgServer {
    type Statement = String;
    type QueryParser = NoopQueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + futures_util::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as futures_util::Sink<PgWireBackendMessage>>::Error>,
    {
        let statement = portal.statement.statement.trim();
        if statement.is_empty() {
            return Ok(Response::EmptyQuery);
        }
        let answer = self.answer(statement).await?;
        query_response(&answer, &portal.result_column_format)
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<Self::Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + futures_util::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as futures_util::Sink<PgWireBackendMessage>>::Error>,
    {
        let answer = self.answer(&target.statement).await?;
        Ok(DescribeStatementResponse::new(Vec::new(), fields(&answer, &Format::UnifiedBinary)))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        target: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + futures_util::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as futures_util::Sink<PgWireBackendMessage>>::Error>,
    {
        let answer = self.answer(&target.statement.statement).await?;
        Ok(DescribePortalResponse::new(fields(&answer, &target.result_column_format)))
    }
}

#[cfg(test)]
mod tests {
    use super::has_parameters;

    #[test]
    fn placeholders_outside_quotes_only() {
        assert!(has_parameters("SELECT * FROM documents WHERE doc_id = $1"));
        assert!(!has_parameters("SELECT '$1' AS price, \"a$2\" FROM documents"));
        assert!(!has_parameters("SELECT 1"));
    }
}
