//! Time travel in SQL: `FROM chunks AS OF EPOCH 120` reads a live table as it
//! was when epoch 120 committed.
//!
//! ```text
//!  SELECT … FROM documents AS OF EPOCH 120 d JOIN chunks c USING (doc_id)
//!     │ rewritten before parsing (outside strings, identifiers and comments)
//!     ▼
//!  SELECT … FROM documents__as_of_120 d JOIN chunks c USING (doc_id)
//!     documents__as_of_120 = documents_changes consolidated up to epoch 120:
//!         SELECT <columns> FROM documents_changes WHERE _epoch <= 120
//!         GROUP BY <columns> HAVING SUM(_diff) > 0
//! ```
//!
//! The change logs keep every committed epoch (nothing compacts them), so any
//! epoch from the first commit to the statement's epoch can be read; a later
//! one is an error that names the newest.

use datafusion::execution::context::SessionContext;
use twinflow_schemas::TableName;

use crate::error::{Error, Result};

/// A table read at an epoch: the view's name, the table and the epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AsOf {
    pub(crate) view: String,
    pub(crate) table: TableName,
    pub(crate) epoch: u64,
}

/// A piece of the statement: a word (or number), or anything else.
#[derive(Debug)]
struct Token {
    start: usize,
    end: usize,
    word: bool,
}

/// The words and numbers of `sql` outside quotes and comments, with their byte ranges.
fn words(sql: &str) -> Vec<Token> {
    let bytes = sql.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\'' | b'"' => {
                // To the closing quote; a doubled quote is an escaped one.
                let mut j = i + 1;
                while j < bytes.len() {
                    if bytes[j] == c {
                        if bytes.get(j + 1) == Some(&c) {
                            j += 2;
                            continue;
                        }
                        break;
                    }
                    j += 1;
                }
                tokens.push(Token { start: i, end: (j + 1).min(bytes.len()), word: false });
                i = j + 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = sql[i..].find('\n').map_or(bytes.len(), |n| i + n);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..].find("*/").map_or(bytes.len(), |n| i + 2 + n + 2);
            }
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                let mut j = i;
                while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                    j += 1;
                }
                tokens.push(Token { start: i, end: j, word: true });
                i = j;
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                tokens.push(Token { start: i, end: i + 1, word: false });
                i += 1;
            }
        }
    }
    tokens
}

/// `sql` with every `<live table> AS OF EPOCH <n>` replaced by the name of
/// its view at epoch `n`, and those views.
pub(crate) fn rewrite(sql: &str) -> Result<(String, Vec<AsOf>)> {
    let tokens = words(sql);
    let text = |t: &Token| &sql[t.start..t.end];
    let mut out = String::with_capacity(sql.len());
    let mut views: Vec<AsOf> = Vec::new();
    let mut copied = 0;
    let mut i = 0;
    while i < tokens.len() {
        let window = &tokens[i..(i + 5).min(tokens.len())];
        let is = |k: usize, word: &str| window.get(k).is_some_and(|t| t.word && text(t).eq_ignore_ascii_case(word));
        let table = window[0]
            .word
            .then(|| TableName::ALL.into_iter().find(|t| text(&window[0]).eq_ignore_ascii_case(t.as_str())))
            .flatten();
        if let Some(table) = table
            && is(1, "as")
            && is(2, "of")
            && is(3, "epoch")
        {
            let number = window.get(4).filter(|t| t.word).map(text);
            let Some(epoch) = number.and_then(|n| n.parse::<u64>().ok()) else {
                return Err(Error::Sql(format!(
                    "{table} AS OF EPOCH takes an epoch number, as in {table} AS OF EPOCH 12"
                )));
            };
            let view = format!("{table}__as_of_{epoch}");
            out.push_str(&sql[copied..window[0].start]);
            out.push_str(&view);
            copied = window[4].end;
            if !views.iter().any(|v| v.view == view) {
                views.push(AsOf { view, table, epoch });
            }
            i += 5;
        } else {
            i += 1;
        }
    }
    out.push_str(&sql[copied..]);
    Ok((out, views))
}

/// Registers each of `views` in `ctx` (after the change logs), refusing
/// epochs later than `committed` or before `oldest` (the time-travel window).
pub(crate) async fn register(
    ctx: &SessionContext,
    views: &[AsOf],
    oldest: u64,
    committed: u64,
    dim: usize,
) -> Result<()> {
    for view in views {
        if view.epoch > committed {
            return Err(Error::Sql(format!(
                "{} AS OF EPOCH {}: that epoch is not committed; the newest committed epoch is {committed}",
                view.table, view.epoch
            )));
        }
        if view.epoch < oldest {
            return Err(Error::Sql(format!(
                "{} AS OF EPOCH {}: that epoch is outside the time-travel window ([storage] time_travel); \
                 the oldest available epoch is {oldest}",
                view.table, view.epoch
            )));
        }
        let columns: Vec<String> =
            view.table.schema(dim).fields().iter().map(|f| format!("\"{}\"", f.name())).collect();
        let columns = columns.join(", ");
        let query = format!(
            "SELECT {columns} FROM {table}_changes WHERE _epoch <= {epoch} GROUP BY {columns} HAVING SUM(_diff) > 0",
            table = view.table,
            epoch = view.epoch,
        );
        let frame = ctx.sql(&query).await.map_err(|e| Error::Sql(format!("{}: {}", view.view, e.strip_backtrace())))?;
        ctx.register_table(view.view.as_str(), frame.into_view())
            .map_err(|e| Error::Sql(format!("{}: {}", view.view, e.strip_backtrace())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_of_is_rewritten_outside_strings_and_comments_only() {
        let (sql, views) = rewrite(
            "SELECT d.title FROM documents as of epoch 12 d JOIN Chunks AS OF EPOCH 3 USING (doc_id) \
             WHERE d.title <> 'documents AS OF EPOCH 9' -- chunks AS OF EPOCH 8\n AND 1 = 1",
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT d.title FROM documents__as_of_12 d JOIN chunks__as_of_3 USING (doc_id) \
             WHERE d.title <> 'documents AS OF EPOCH 9' -- chunks AS OF EPOCH 8\n AND 1 = 1"
        );
        assert_eq!(
            views,
            [
                AsOf { view: "documents__as_of_12".into(), table: TableName::Documents, epoch: 12 },
                AsOf { view: "chunks__as_of_3".into(), table: TableName::Chunks, epoch: 3 },
            ]
        );
        assert_eq!(rewrite("SELECT 'it''s' FROM documents").unwrap(), ("SELECT 'it''s' FROM documents".into(), vec![]));
        assert!(rewrite("SELECT * FROM chunks AS OF EPOCH now").is_err());
        assert!(rewrite("SELECT * FROM chunks AS OF EPOCH").is_err());
    }
}
