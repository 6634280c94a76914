//! Search inside SQL: the table functions `knn(query, k)`, `bm25(query, k)`
//! and `hybrid(query, k)`, and the scalar `embed(text)`.
//!
//! ```text
//!  SELECT d.author, s.score FROM hybrid('railroads', 20) s JOIN documents d USING (doc_id)
//!                                 │ planned: the query encoded, the live indexes searched
//!                                 └─▶ chunk_id, doc_id, score, rank  (a row per document of each hit)
//! ```
//!
//! A search answers at the epoch it ran at; the statement's tables were taken
//! at one epoch too. When a commit falls between the two, the search records
//! it ([`SearchFunctions::moved`]) and the store runs the statement again on
//! the new epoch, so that every table and every search of one answer show
//! the same epoch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::{Array, ArrayRef, Float32Array, Float32Builder, ListBuilder, RecordBatch, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, ScalarValue, plan_err};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use datafusion::prelude::{Expr, SessionContext};
use twinflow_schemas::api::{SearchFilter, SearchMode};

use crate::Store;

/// Largest `k` a table function accepts (as `/v1/search`).
pub(crate) const MAX_K: usize = 1000;

/// What the table functions need from outside the store.
pub trait QueryEncoder: Send + Sync {
    /// The query's vector (the search encoder, as `/v1/search` embeds it).
    fn encode(&self, text: &str) -> Result<Vec<f32>, String>;
    /// The fusion `hybrid(…)` searches with (the active retrieval setting).
    fn hybrid(&self) -> SearchMode;
}

/// The search functions of one statement, bound to the epoch its tables show.
#[derive(Clone)]
pub(crate) struct SearchFunctions {
    pub(crate) store: Arc<Store>,
    pub(crate) encoder: Arc<dyn QueryEncoder>,
    pub(crate) epoch: u64,
    /// Set when a search answered at another epoch than `epoch`.
    pub(crate) moved: Arc<AtomicBool>,
}

impl std::fmt::Debug for SearchFunctions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchFunctions").field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

/// Which search a table function runs.
#[derive(Clone, Copy, Debug)]
enum Which {
    Knn,
    Bm25,
    Hybrid,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Self::Knn => "knn",
            Self::Bm25 => "bm25",
            Self::Hybrid => "hybrid",
        }
    }
}

/// The columns every search function returns.
pub fn search_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("chunk_id", DataType::Utf8, false),
        Field::new("doc_id", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
        Field::new("rank", DataType::UInt32, false),
    ]))
}

/// Registers `knn`, `bm25`, `hybrid` and `embed` in `ctx`.
pub(crate) fn register(ctx: &SessionContext, functions: &SearchFunctions) {
    for which in [Which::Knn, Which::Bm25, Which::Hybrid] {
        ctx.register_udtf(which.name(), Arc::new(SearchFunction { which, functions: functions.clone() }));
    }
    ctx.register_udf(ScalarUDF::new_from_impl(Embed::new(functions.encoder.clone())));
}

#[derive(Debug)]
struct SearchFunction {
    which: Which,
    functions: SearchFunctions,
}

/// The text of a string literal argument.
fn text_argument(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Literal(
            ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)),
            _,
        ) => Some(s),
        _ => None,
    }
}

/// The value of an integer literal argument.
fn integer_argument(expr: &Expr) -> Option<i64> {
    match expr {
        Expr::Literal(value, _) => match value {
            ScalarValue::Int64(Some(v)) => Some(*v),
            ScalarValue::Int32(Some(v)) => Some(i64::from(*v)),
            ScalarValue::UInt64(Some(v)) => i64::try_from(*v).ok(),
            _ => None,
        },
        _ => None,
    }
}

impl TableFunctionImpl for SearchFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> datafusion::common::Result<Arc<dyn TableProvider>> {
        let name = self.which.name();
        let exprs = args.exprs();
        let (Some(query), Some(k)) = (exprs.first().and_then(text_argument), exprs.get(1).and_then(integer_argument))
        else {
            return plan_err!("{name}(query, k) takes a text and a whole number, as in {name}('railroads', 20)");
        };
        if exprs.len() > 2 {
            return plan_err!("{name}(query, k) takes two arguments, not {}", exprs.len());
        }
        if query.trim().is_empty() {
            return plan_err!("{name}(query, k): the query must not be empty");
        }
        let k = match usize::try_from(k) {
            Ok(k) if (1..=MAX_K).contains(&k) => k,
            _ => return plan_err!("{name}(query, k): k must be between 1 and {MAX_K}, not {k}"),
        };
        let f = &self.functions;
        let (mode, vector) = match self.which {
            Which::Bm25 => (SearchMode::Bm25, Vec::new()),
            Which::Knn => (SearchMode::Vector, f.encoder.encode(query).map_err(DataFusionError::Execution)?),
            Which::Hybrid => (f.encoder.hybrid(), f.encoder.encode(query).map_err(DataFusionError::Execution)?),
        };
        let (epoch, hits) = f
            .store
            .search_mode(query, &vector, k, &SearchFilter::default(), mode, false)
            .map_err(|e| DataFusionError::Execution(format!("{name}: {e}")))?;
        if epoch != f.epoch {
            f.moved.store(true, Ordering::SeqCst);
        }
        let (mut chunks, mut docs, mut scores, mut ranks) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (rank, hit) in hits.iter().enumerate() {
            for source in &hit.sources {
                chunks.push(hit.chunk_id.to_string());
                docs.push(source.doc_id.clone());
                scores.push(hit.score);
                ranks.push(rank as u32 + 1);
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(chunks)),
            Arc::new(StringArray::from(docs)),
            Arc::new(Float32Array::from(scores)),
            Arc::new(UInt32Array::from(ranks)),
        ];
        let batch = RecordBatch::try_new(search_schema(), columns)?;
        Ok(Arc::new(MemTable::try_new(search_schema(), vec![vec![batch]])?))
    }
}

/// `embed(text)`: the search encoder's vector of each text.
struct Embed {
    encoder: Arc<dyn QueryEncoder>,
    signature: Signature,
}

impl Embed {
    fn new(encoder: Arc<dyn QueryEncoder>) -> Self {
        Self { encoder, signature: Signature::string(1, Volatility::Stable) }
    }
}

impl std::fmt::Debug for Embed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("embed")
    }
}

impl PartialEq for Embed {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Embed {}

impl std::hash::Hash for Embed {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "embed".hash(state);
    }
}

/// Texts `embed` encodes in one statement at most: the encoder is the costly part.
const MAX_EMBED_ROWS: usize = 10_000;

impl ScalarUDFImpl for Embed {
    fn name(&self) -> &str {
        "embed"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::List(Arc::new(Field::new_list_field(DataType::Float32, true))))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::common::Result<ColumnarValue> {
        let rows = args.number_rows;
        let texts = args.args[0].to_array(rows)?;
        let texts = arrow::compute::cast(&texts, &DataType::Utf8)?;
        let texts = texts.as_any().downcast_ref::<StringArray>().expect("cast to Utf8");
        if texts.len() > MAX_EMBED_ROWS {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "embed(text) encodes at most {MAX_EMBED_ROWS} texts per batch; add a LIMIT or a WHERE"
            )));
        }
        let mut out = ListBuilder::new(Float32Builder::new());
        for text in texts.iter() {
            match text {
                Some(text) => {
                    let vector = self.encoder.encode(text).map_err(DataFusionError::Execution)?;
                    out.values().append_slice(&vector);
                    out.append(true);
                }
                None => out.append(false),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}
