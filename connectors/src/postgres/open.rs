//! Opening a Postgres source: the connection, the server's settings,
//! the tables (columns, replica identity), the publication and the slot,
//! and where a committed position says to resume.

use std::collections::HashMap;
use std::time::Instant;

use tokio_postgres::Client;
use tokio_postgres::types::PgLsn;
use twinflow_schemas::ChangeLimits;
use twinflow_schemas::config::PostgresSourceConfig;

use super::connect::Connect;
use super::pgoutput::Lsn;
use super::{FIELDS, Follower, Position, PostgresSource, Table, describe, quote_ident};
use crate::{Error, Result, SourcePosition};

impl Follower {
    pub(super) async fn open(
        name: String,
        config: PostgresSourceConfig,
        limits: ChangeLimits,
        resume: Option<SourcePosition>,
    ) -> Result<Self> {
        let bad = |reason: String| Error::Config { source_name: name.clone(), reason };
        let mut connect: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| bad(format!("{:?} is not a Postgres connection string: {e}", config.url)))?;
        if let Some(variable) = &config.password_env {
            let password = std::env::var(variable)
                .map_err(|_| bad(format!("the environment variable {variable} (password_env) is not set")))?;
            connect.password(password);
        }
        if connect.get_application_name().is_none() {
            connect.application_name(&format!("twinflow {name}"));
        }
        if config.tables.is_empty() {
            return Err(bad("no tables given".into()));
        }
        if config.batch == 0 {
            return Err(bad("batch must be at least 1".into()));
        }
        let columns = [
            Some(config.doc_id_column.clone()),
            Some(config.content_column.clone()),
            config.title_column.clone(),
            config.author_column.clone(),
            config.url_column.clone(),
            config.kind_column.clone(),
        ];
        let server = |e: tokio_postgres::Error, retryable: bool| Error::Postgres {
            source_name: name.clone(),
            reason: describe(&e),
            retryable,
        };
        let connect = Connect::new(connect, config.ca.as_deref(), &name).map_err(bad)?;
        let client = connect.client().await.map_err(|e| server(e, true))?;

        let wal_level = client.query_one("SHOW wal_level", &[]).await.map_err(|e| server(e, true))?;
        let wal_level: String = wal_level.get(0);
        if wal_level != "logical" {
            return Err(bad(format!(
                "the server's wal_level is {wal_level}: set wal_level = logical (postgresql.conf) and restart it"
            )));
        }

        // Decoded values come in the database's encoding.
        let encoding = client.query_one("SHOW server_encoding", &[]).await.map_err(|e| server(e, true))?;
        let encoding: String = encoding.get(0);
        if encoding != "UTF8" && encoding != "SQL_ASCII" {
            return Err(bad(format!("the database's encoding is {encoding}: twinflow follows UTF8 databases")));
        }

        let mut tables = Vec::new();
        for table in &config.tables {
            tables.push(check_table(&client, table, &columns, &config.doc_id_column).await.map_err(|e| match e {
                Checked::Refused(reason) => bad(reason),
                Checked::Server(e) => server(e, true),
            })?);
        }

        let slot = config.slot.clone().unwrap_or_else(|| PostgresSource::default_slot(&name));
        let publication = config.publication.clone().unwrap_or_else(|| slot.clone());
        let exists = client
            .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&publication])
            .await
            .map_err(|e| server(e, true))?
            .is_some();
        if exists {
            let published: Vec<(String, String)> = client
                .query(
                    "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
                    &[&publication],
                )
                .await
                .map_err(|e| server(e, true))?
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect();
            let missing: Vec<&str> = tables
                .iter()
                .filter(|t| !published.iter().any(|(schema, name)| (schema, name) == (&t.schema, &t.name)))
                .map(|t| t.label.as_str())
                .collect();
            if !missing.is_empty() {
                return Err(bad(format!(
                    "the publication {publication} does not publish {}: add them (ALTER PUBLICATION … ADD TABLE) \
                     or name another publication",
                    missing.join(", ")
                )));
            }
        } else {
            let list: Vec<&str> = tables.iter().map(|t| t.quoted.as_str()).collect();
            let create = format!(
                "CREATE PUBLICATION {} FOR TABLE {} WITH (publish = 'insert, update, delete')",
                quote_ident(&publication),
                list.join(", ")
            );
            client.batch_execute(&create).await.map_err(|e| server(e, false))?;
            tracing::info!(source = %name, %publication, "publication created");
        }

        let existing = client
            .query_opt(
                "SELECT plugin::text, confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(|e| server(e, true))?;
        let (confirmed, created) = match existing {
            Some(row) => {
                let plugin: Option<String> = row.get(0);
                if plugin.as_deref() != Some("pgoutput") {
                    return Err(bad(format!("the slot {slot} exists but decodes with {plugin:?}, not pgoutput")));
                }
                let lsn: Option<PgLsn> = row.get(1);
                (lsn.map(Lsn::from).unwrap_or_default(), false)
            }
            None => {
                let row = client
                    .query_one("SELECT lsn FROM pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot])
                    .await
                    .map_err(|e| server(e, false))?;
                let lsn = Lsn::from(row.get::<_, PgLsn>(0));
                tracing::info!(source = %name, %slot, %lsn, "replication slot created");
                (lsn, true)
            }
        };

        let position = resume.and_then(|p| match serde_json::from_value::<Position>(p) {
            Ok(p) if p.slot == slot => Some(p),
            Ok(p) => {
                tracing::warn!(source = %name, committed = %p.slot, %slot, "the committed position is another slot's: taking a snapshot");
                None
            }
            Err(e) => {
                tracing::warn!(source = %name, error = %e, "the committed position is unreadable: taking a snapshot");
                None
            }
        });
        let position = match position {
            Some(_) if created => {
                tracing::warn!(
                    source = %name, %slot,
                    "the slot was gone and is made anew: taking a new snapshot (rows deleted meanwhile stay)"
                );
                None
            }
            other => other,
        };
        let (needs_snapshot, sent, snapshot) = match position {
            Some(p) => (false, p.lsn, p.snapshot),
            None => (true, confirmed, None),
        };
        Ok(Self {
            name,
            config,
            limits,
            connect,
            slot,
            publication,
            tables,
            columns,
            client: Some(client),
            relations: HashMap::new(),
            needs_snapshot,
            sent,
            snapshot,
            confirmed,
            // A position committed before a crash and never confirmed is confirmed now.
            to_confirm: if needs_snapshot { confirmed } else { sent.max(confirmed) },
            resent_rows: 0,
            last_sent_at: Instant::now(),
            last_lag_at: None,
            down: false,
        })
    }
}

enum Checked {
    Refused(String),
    Server(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for Checked {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Server(error)
    }
}

/// Finds `table`, checks it has the mapped columns and that deletes will
/// carry `doc_id_column`.
async fn check_table(
    client: &Client,
    table: &str,
    columns: &[Option<String>; FIELDS],
    doc_id_column: &str,
) -> std::result::Result<Table, Checked> {
    let row = client
        .query_opt(
            "SELECT n.nspname::text, c.relname::text, c.relreplident::text, c.relkind::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)",
            &[&table],
        )
        .await?
        .ok_or_else(|| Checked::Refused(format!("there is no table {table:?}")))?;
    let (schema, name, identity, kind): (String, String, String, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if kind != "r" && kind != "p" {
        return Err(Checked::Refused(format!("{table:?} is not a table (only tables have changes to follow)")));
    }
    let quoted = format!("{}.{}", quote_ident(&schema), quote_ident(&name));
    let label = if schema == "public" { name.clone() } else { format!("{schema}.{name}") };
    let present: Vec<String> = client
        .query(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
            &[&quoted],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for column in columns.iter().flatten() {
        if !present.contains(column) {
            return Err(Checked::Refused(format!("{label} has no column {column:?} (it has {})", present.join(", "))));
        }
    }
    let in_identity = match identity.as_str() {
        "f" => true,
        "n" => false,
        // The primary key (default), or the index chosen as the replica identity.
        which => {
            let flag = if which == "i" { "indisreplident" } else { "indisprimary" };
            let keys: Vec<String> = client
                .query(
                    &format!(
                        "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid \
                         AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass($1) AND i.{flag}"
                    ),
                    &[&quoted],
                )
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            keys.iter().any(|k| k == doc_id_column)
        }
    };
    if !in_identity {
        return Err(Checked::Refused(format!(
            "{label}'s replica identity does not hold {doc_id_column:?}, so its deletes could not say which document \
             goes: make {doc_id_column:?} the primary key, or ALTER TABLE {quoted} REPLICA IDENTITY FULL"
        )));
    }
    Ok(Table { schema, name, quoted, label })
}
