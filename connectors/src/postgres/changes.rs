//! The decoding session's messages turned into document changes: the
//! relations learnt, each row change applied to its table's mapping, and
//! an update with TOASTed columns left out read again.

use tokio::runtime::Runtime;
use twinflow_schemas::{Document, DocumentChange, DocumentKind};

use super::pgoutput::{self, Message, Value};
use super::{DOC_ID, FIELDS, Failure, Follower, Relation, quote_ident};
use crate::Result;
use crate::handle::{Halt, Outbox};

impl Follower {
    /// Learns a relation of the decoding session.
    pub(super) fn relate(&mut self, id: u32, schema: &str, name: &str, columns: &[pgoutput::Column]) {
        let Some(table) = self.tables.iter().position(|t| t.schema == schema && t.name == name) else {
            self.relations.remove(&id);
            return;
        };
        let positions = std::array::from_fn(|i| {
            self.columns[i].as_ref().and_then(|wanted| columns.iter().position(|c| &c.name == wanted))
        });
        self.relations.insert(id, Relation { table, columns: positions });
    }

    /// Turns one decoded row change into document changes.
    pub(super) fn apply(
        &self,
        runtime: &Runtime,
        message: Message,
        outbox: &Outbox,
        changes: &mut Vec<DocumentChange>,
    ) -> Result<(), Failure> {
        let relation_of = |id: u32| self.relations.get(&id).cloned();
        match message {
            Message::Insert { relation, new } | Message::Update { relation, old: None, new } => {
                let Some(relation) = relation_of(relation) else { return Ok(()) };
                self.upsert(runtime, &relation, None, &new, outbox, changes)
            }
            Message::Update { relation, old: Some(old), new } => {
                let Some(relation) = relation_of(relation) else { return Ok(()) };
                self.upsert(runtime, &relation, Some(&old), &new, outbox, changes)
            }
            Message::Delete { relation, old } => {
                let Some(relation) = relation_of(relation) else { return Ok(()) };
                match pick(&relation, &old, DOC_ID) {
                    Some(Value::Text(id)) => match self.doc_id(relation.table, id) {
                        Ok(doc_id) => changes.push(DocumentChange::Delete { doc_id }),
                        Err(reason) => outbox.error(self.location(), reason)?,
                    },
                    _ => outbox.error(
                        self.location(),
                        format!(
                            "a delete from {} without its {} (not in the replica identity)",
                            self.tables[relation.table].label, self.config.doc_id_column
                        ),
                    )?,
                }
                Ok(())
            }
            Message::Truncate { relations } => {
                for id in relations {
                    if let Some(relation) = relation_of(id) {
                        outbox.error(
                            self.location(),
                            format!(
                                "{} was truncated: its documents stay (truncation is not followed; delete the rows instead)",
                                self.tables[relation.table].label
                            ),
                        )?;
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// An inserted or updated row: its document (the old one deleted when
    /// its id changed).
    pub(super) fn upsert(
        &self,
        runtime: &Runtime,
        relation: &Relation,
        old: Option<&[Value]>,
        new: &[Value],
        outbox: &Outbox,
        changes: &mut Vec<DocumentChange>,
    ) -> Result<(), Failure> {
        let mut values: [Option<String>; FIELDS] = Default::default();
        let mut unchanged = false;
        for (field, value) in values.iter_mut().enumerate() {
            match pick(relation, new, field) {
                Some(Value::Text(text)) => *value = Some(text.clone()),
                Some(Value::Unchanged) => match old.and_then(|old| pick(relation, old, field)) {
                    Some(Value::Text(text)) => *value = Some(text.clone()),
                    _ => unchanged = true,
                },
                Some(Value::Null) | None => {}
            }
        }
        if let (Some(old), Some(Value::Text(new_id))) = (old, pick(relation, new, DOC_ID))
            && let Some(Value::Text(old_id)) = pick(relation, old, DOC_ID)
            && old_id != new_id
        {
            match self.doc_id(relation.table, old_id) {
                Ok(doc_id) => changes.push(DocumentChange::Delete { doc_id }),
                Err(reason) => outbox.error(self.location(), reason)?,
            }
        }
        if unchanged {
            // A TOASTed value left as it was is not sent: read the row as it is now.
            let Some(Some(id)) = values.get(DOC_ID) else { return Ok(()) };
            let query = format!(
                "SELECT {} FROM {} WHERE {}::text = $1",
                self.select_list(),
                self.tables[relation.table].quoted,
                quote_ident(&self.config.doc_id_column)
            );
            let client = self.client()?;
            let row = runtime.block_on(client.query_opt(&query, &[id]))?;
            // Gone since: a later delete says so.
            let Some(row) = row else { return Ok(()) };
            values = std::array::from_fn(|i| row.get(i));
        }
        self.change(relation.table, values, outbox, changes)?;
        Ok(())
    }

    /// The document change of a row of `table`, or an ingest error.
    pub(super) fn change(
        &self,
        table: usize,
        values: [Option<String>; FIELDS],
        outbox: &Outbox,
        changes: &mut Vec<DocumentChange>,
    ) -> Result<(), Halt> {
        let [doc_id, content, title, author, url, kind] = values;
        let label = &self.tables[table].label;
        let Some(id) = doc_id else {
            return outbox
                .error(self.location(), format!("a row of {label} whose {} is NULL", self.config.doc_id_column));
        };
        let doc_id = match self.doc_id(table, &id) {
            Ok(doc_id) => doc_id,
            Err(reason) => return outbox.error(self.location(), reason),
        };
        let Some(content) = content else {
            changes.push(DocumentChange::Delete { doc_id });
            return Ok(());
        };
        if content.len() > self.limits.max_document_bytes {
            return outbox.error(
                doc_id,
                format!("content of {} bytes is over the limit of {}", content.len(), self.limits.max_document_bytes),
            );
        }
        let kind = match kind {
            None => self.config.kind,
            Some(kind) => match kind.parse::<DocumentKind>() {
                Ok(kind) => kind,
                Err(e) => return outbox.error(doc_id, e.to_string()),
            },
        };
        changes.push(DocumentChange::Upsert(Document {
            doc_id,
            kind,
            author: author.unwrap_or_default(),
            title: title.unwrap_or_default(),
            url: url.unwrap_or_default(),
            source: self.name.clone(),
            format: self.config.format,
            fetched_at: None,
            content,
        }));
        Ok(())
    }

    pub(super) fn doc_id(&self, table: usize, id: &str) -> std::result::Result<String, String> {
        let doc_id = format!("{}{}/{id}", self.config.doc_id_prefix, self.tables[table].label);
        if doc_id.len() > self.limits.max_doc_id_bytes {
            return Err(format!(
                "doc_id of {} bytes is over the limit of {}",
                doc_id.len(),
                self.limits.max_doc_id_bytes
            ));
        }
        Ok(doc_id)
    }
}

/// The value of mapped `field` in `tuple`.
fn pick<'a>(relation: &Relation, tuple: &'a [Value], field: usize) -> Option<&'a Value> {
    relation.columns[field].and_then(|i| tuple.get(i))
}
