//! PostgreSQL change capture: the rows of tables, through logical
//! replication with the built-in `pgoutput` plugin, without Kafka or
//! Debezium in between.
//!
//! ```text
//!  open:  wal_level = logical? ▸ the tables, their columns and replica
//!         identity ▸ the publication (created for the tables if missing)
//!         ▸ the slot (created if missing)
//!  first: a snapshot in one REPEATABLE READ transaction, read in batches
//!         (the transaction's xmin:xmax:xip remembered)
//!  then:  every `poll`: pg_logical_slot_peek_binary_changes(slot) ─▶
//!         Begin/Relation/Insert/Update/Delete/Commit ─▶ one batch of
//!         changes per read, with the position {slot, lsn}
//!  an epoch commits the position ─▶ pg_replication_slot_advance(slot, lsn)
//! ```
//!
//! The slot keeps every change the server has not been told is committed,
//! so nothing is lost when either side restarts: peeking does not consume,
//! and the slot advances only to a position twinflow has committed. A
//! transaction whose changes were sent (or committed: on a restart, the
//! position) is skipped by its end LSN, so nothing is repeated either.
//! The snapshot and the slot are stitched by transaction visibility: a
//! decoded transaction that the snapshot already saw is skipped; any other
//! is applied. Each row is one document, `<doc_id_prefix><table>/<id>`; a
//! row whose content is NULL has none. An update that leaves a TOASTed
//! column out (Postgres sends only "unchanged") reads the row again. When
//! the server goes away the source says so once (an ingest error), then
//! reconnects with backoff and goes on where it was.
//!
//! Here: the source, its position and the follower's loop (snapshot, reads,
//! confirmations); `open.rs` the checks and the publication and slot,
//! `connect.rs` the connection, `changes.rs` a decoded row change turned
//! into document changes.

mod changes;
mod connect;
mod open;
pub mod pgoutput;

#[cfg(feature = "testing")]
pub mod local_server;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;
use tokio_postgres::types::PgLsn;
use tokio_postgres::{Client, SimpleQueryMessage};
use twinflow_schemas::api::LagUnit;
use twinflow_schemas::config::PostgresSourceConfig;
use twinflow_schemas::{ChangeLimits, DocumentChange};

use crate::handle::{Halt, Outbox};
use crate::{Error, Result, SourceEvent, SourceHandle, SourcePosition};
use pgoutput::{Lsn, Message};

/// How often the lag behind the server is measured.
const LAG_EVERY: Duration = Duration::from_secs(1);
/// While no change comes, how often the slot is still moved to the
/// server's position (so it does not hold the WAL of other tables' changes).
const IDLE_POSITION_EVERY: Duration = Duration::from_secs(10);
/// Longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The source; see the module docs.
#[derive(Debug)]
pub struct PostgresSource;

impl PostgresSource {
    /// Connects, checks the tables, creates the publication and the slot
    /// when missing (fatal errors here: a bad URL, no such table, a server
    /// without logical replication), then follows on a thread.
    pub fn spawn(
        name: String,
        config: PostgresSourceConfig,
        limits: ChangeLimits,
        resume: Option<SourcePosition>,
        tx: Sender<SourceEvent>,
    ) -> Result<SourceHandle> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Spawn { name: name.clone(), source: e })?;
        let follower = runtime.block_on(Follower::open(name.clone(), config, limits, resume))?;
        SourceHandle::spawn(name, tx, move |outbox| follower.run(&runtime, &outbox))
    }

    /// The slot and publication a source of this name uses unless told
    /// otherwise: `twinflow_<name>`, in the characters slot names allow.
    pub fn default_slot(name: &str) -> String {
        let clean: String =
            name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
        format!("twinflow_{clean}")
    }
}

/// What a restart resumes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    slot: String,
    /// Every transaction the slot decodes that ends at or before this LSN has been sent.
    lsn: Lsn,
    /// The initial snapshot, while transactions it saw may still be decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    snapshot: Option<Snapshot>,
}

/// The initial snapshot's view of transactions (`pg_current_snapshot()`:
/// every id below `xmax` not in `xip` had ended), and the WAL position
/// when it was taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Snapshot {
    xmax: u64,
    xip: Vec<u64>,
    /// Transactions committed at or after this were not seen by it.
    until: Lsn,
}

impl Snapshot {
    /// From `pg_current_snapshot()::text` (`xmin:xmax:xip,…`).
    fn parse(text: &str, until: Lsn) -> std::result::Result<Self, String> {
        let bad = || format!("{text:?} is not a snapshot");
        let mut parts = text.split(':');
        let number = |p: Option<&str>| p.and_then(|p| p.parse::<u64>().ok()).ok_or_else(bad);
        let _xmin = number(parts.next())?;
        let xmax = number(parts.next())?;
        let xip = match parts.next() {
            Some("") | None => Vec::new(),
            Some(list) => {
                list.split(',').map(|x| x.parse().map_err(|_| bad())).collect::<std::result::Result<_, _>>()?
            }
        };
        Ok(Self { xmax, xip, until })
    }

    /// Whether the snapshot already holds the effects of the committed
    /// transaction `xid` (a 32-bit id, as decoding gives it).
    fn saw(&self, xid: u32, commit_lsn: Lsn) -> bool {
        if commit_lsn >= self.until {
            return false;
        }
        // Widen to the 64-bit id nearest xmax (ids wrap around every 2^32).
        let epoch = self.xmax >> 32;
        let mut full = (epoch << 32) | u64::from(xid);
        if full > self.xmax + (1 << 31) && epoch > 0 {
            full -= 1 << 32;
        }
        full < self.xmax && !self.xip.contains(&full)
    }
}

/// A followed table, as found at open.
#[derive(Clone, Debug)]
struct Table {
    schema: String,
    name: String,
    /// `"schema"."name"`, for SQL.
    quoted: String,
    /// `schema.name`, or `name` in `public`: its documents' ids say it.
    label: String,
}

/// A relation of the decoding session: which of its columns are ours.
#[derive(Clone, Debug)]
struct Relation {
    table: usize,
    /// Position of each mapped column in the relation's tuples.
    columns: [Option<usize>; FIELDS],
}

/// The mapped columns, in this order everywhere (SELECT lists, tuples).
const FIELDS: usize = 6;
const DOC_ID: usize = 0;

/// What went wrong in a step of the run.
enum Failure {
    /// Stop (asked to, or cannot go on).
    Halt(Halt),
    /// The server went away or refused: reconnect and go on.
    Server(String),
}

impl From<Halt> for Failure {
    fn from(halt: Halt) -> Self {
        Self::Halt(halt)
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Server(describe(&error))
    }
}

fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            // With its causes ("error performing TLS handshake: invalid peer certificate: …").
            let mut text = error.to_string();
            let mut cause = std::error::Error::source(error);
            while let Some(inner) = cause {
                text = format!("{text}: {inner}");
                cause = inner.source();
            }
            text
        }
    }
}

struct Follower {
    name: String,
    config: PostgresSourceConfig,
    limits: ChangeLimits,
    connect: connect::Connect,
    slot: String,
    publication: String,
    tables: Vec<Table>,
    /// The mapped column names, in [`FIELDS`] order.
    columns: [Option<String>; FIELDS],
    client: Option<Client>,
    /// This decoding session's relations, by id.
    relations: HashMap<u32, Relation>,
    needs_snapshot: bool,
    /// Where the sent changes end; and the snapshot's view, while it matters.
    sent: Lsn,
    snapshot: Option<Snapshot>,
    /// How far the slot has been advanced, and how far it should be.
    confirmed: Lsn,
    to_confirm: Lsn,
    /// Rows of the last read that were already sent (read again until the slot advances).
    resent_rows: usize,
    last_sent_at: Instant,
    last_lag_at: Option<Instant>,
    /// Whether the server is known to be unreachable (said once per outage).
    down: bool,
}

impl Follower {
    fn run(mut self, runtime: &Runtime, outbox: &Outbox) -> Result<(), Halt> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.step(runtime, outbox) {
                Ok(true) => backoff = Duration::from_millis(100),
                Ok(false) => outbox.sleep(self.config.poll)?,
                Err(Failure::Halt(halt)) => return Err(halt),
                Err(Failure::Server(reason)) => {
                    self.client = None;
                    if !self.down {
                        self.down = true;
                        tracing::warn!(source = %self.name, %reason, "lost the server: reconnecting");
                        outbox.error(self.location(), format!("the server failed: {reason}; reconnecting"))?;
                    } else {
                        tracing::debug!(source = %self.name, %reason, "still no server");
                    }
                    outbox.sleep(backoff)?;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn location(&self) -> String {
        format!("postgres://{}", self.slot)
    }

    /// One step: reconnect, confirm, snapshot or read. `Ok(true)` when
    /// there may be more to read at once.
    fn step(&mut self, runtime: &Runtime, outbox: &Outbox) -> Result<bool, Failure> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = Some(runtime.block_on(self.connect.client())?);
            self.relations.clear();
            if self.down {
                tracing::info!(source = %self.name, "reconnected");
                self.down = false;
            }
        }
        if let Some(position) = outbox.committed()
            && let Ok(position) = serde_json::from_value::<Position>(position)
        {
            self.to_confirm = self.to_confirm.max(position.lsn);
        }
        if self.to_confirm > self.confirmed {
            self.confirm(runtime)?;
        }
        if self.needs_snapshot {
            self.take_snapshot(runtime, outbox)?;
            self.needs_snapshot = false;
            return Ok(true);
        }
        if self.last_lag_at.is_none_or(|at| at.elapsed() >= LAG_EVERY) {
            self.measure_lag(runtime, outbox)?;
        }
        self.read(runtime, outbox)
    }

    fn client(&self) -> Result<&Client, Failure> {
        self.client.as_ref().ok_or_else(|| Failure::Server("not connected".into()))
    }

    /// Moves the slot to the committed position.
    fn confirm(&mut self, runtime: &Runtime) -> Result<(), Failure> {
        let target = PgLsn::from(self.to_confirm);
        let client = self.client()?;
        runtime
            .block_on(client.query_one("SELECT 1 FROM pg_replication_slot_advance($1, $2)", &[&self.slot, &target]))?;
        self.confirmed = self.to_confirm;
        tracing::debug!(source = %self.name, lsn = %self.confirmed, "slot advanced");
        Ok(())
    }

    fn measure_lag(&mut self, runtime: &Runtime, outbox: &Outbox) -> Result<(), Failure> {
        let client = self.client()?;
        let row = runtime.block_on(client.query_opt(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8 FROM pg_replication_slots \
             WHERE slot_name = $1",
            &[&self.slot],
        ))?;
        if let Some(row) = row {
            let behind: Option<i64> = row.get(0);
            outbox.report_lag(behind.unwrap_or(0).max(0) as u64, LagUnit::Bytes);
        }
        self.last_lag_at = Some(Instant::now());
        Ok(())
    }

    /// Reads every table in one REPEATABLE READ transaction, in batches,
    /// and ends with the position that stitches the slot to it.
    fn take_snapshot(&mut self, runtime: &Runtime, outbox: &Outbox) -> Result<(), Failure> {
        let started = Instant::now();
        let client = self.client()?;
        runtime.block_on(client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"))?;
        let row = runtime
            .block_on(client.query_one("SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn()", &[]))?;
        let (view, until): (String, PgLsn) = (row.get(0), row.get(1));
        let snapshot = Snapshot::parse(&view, until.into()).map_err(Failure::Server)?;
        let mut rows = 0usize;
        for table in 0..self.tables.len() {
            let declare = format!(
                "DECLARE twinflow_snapshot NO SCROLL CURSOR FOR SELECT {} FROM {}",
                self.select_list(),
                self.tables[table].quoted
            );
            runtime.block_on(client.batch_execute(&declare))?;
            loop {
                let fetched = runtime
                    .block_on(client.simple_query(&format!("FETCH {} FROM twinflow_snapshot", self.config.batch)))?;
                let mut changes = Vec::new();
                let mut count = 0;
                for message in fetched {
                    if let SimpleQueryMessage::Row(row) = message {
                        count += 1;
                        let values: [Option<String>; FIELDS] = std::array::from_fn(|i| row.get(i).map(str::to_owned));
                        self.change(table, values, outbox, &mut changes)?;
                    }
                }
                rows += count;
                outbox.changes(changes)?;
                if count < self.config.batch {
                    break;
                }
            }
            runtime.block_on(client.batch_execute("CLOSE twinflow_snapshot"))?;
        }
        runtime.block_on(client.batch_execute("COMMIT"))?;
        tracing::info!(source = %self.name, rows, seconds = started.elapsed().as_secs_f64(), "snapshot taken");
        self.snapshot = Some(snapshot);
        // Nothing decoded yet: the position is where the slot stands.
        self.sent = self.confirmed;
        self.send(Vec::new(), outbox)?;
        Ok(())
    }

    /// `doc_id, content, title, author, url, kind` as text (NULL where unmapped).
    fn select_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| c.as_deref().map_or("NULL".to_owned(), |c| format!("{}::text", quote_ident(c))))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Reads what the slot has decoded past the position sent.
    fn read(&mut self, runtime: &Runtime, outbox: &Outbox) -> Result<bool, Failure> {
        let client = self.client()?;
        // A record boundary every change before which this read will see,
        // if the server has flushed it already: the insert position.
        let row = runtime
            .block_on(client.query_one("SELECT pg_current_wal_insert_lsn(), pg_current_wal_flush_lsn()", &[]))?;
        let (inserted, flushed) = (Lsn::from(row.get::<_, PgLsn>(0)), Lsn::from(row.get::<_, PgLsn>(1)));
        let limit = self.config.batch + self.resent_rows;
        let rows = runtime.block_on(client.query(
            "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2, \
             'proto_version', '1', 'publication_names', $3)",
            &[&self.slot, &(i32::try_from(limit).unwrap_or(i32::MAX)), &self.publication],
        ))?;
        let complete = rows.len() < limit;

        let mut changes = Vec::new();
        let mut transaction: Option<(u32, Vec<Message>)> = None;
        let mut end = self.sent;
        let mut resent_rows = 0;
        let mut rows_in_transaction = 0;
        for row in &rows {
            let data: &[u8] = row.get(0);
            let message = pgoutput::decode(data).map_err(|e| {
                Failure::Halt(Halt::Fatal(Error::Postgres {
                    source_name: self.name.clone(),
                    reason: e.to_string(),
                    retryable: false,
                }))
            })?;
            rows_in_transaction += 1;
            match message {
                Message::Begin { xid, .. } => {
                    transaction = Some((xid, Vec::new()));
                    rows_in_transaction = 1;
                }
                Message::Relation { id, schema, name, columns } => self.relate(id, &schema, &name, &columns),
                Message::Commit { commit_lsn, end_lsn } => {
                    let (xid, messages) = transaction.take().unwrap_or_default();
                    if end_lsn <= self.sent {
                        resent_rows += rows_in_transaction;
                        continue;
                    }
                    end = end.max(end_lsn);
                    if self.snapshot.as_ref().is_some_and(|s| s.saw(xid, commit_lsn)) {
                        continue;
                    }
                    for message in messages {
                        self.apply(runtime, message, outbox, &mut changes)?;
                    }
                }
                Message::Other(_) => {}
                change => {
                    if let Some((_, messages)) = &mut transaction {
                        messages.push(change);
                    }
                }
            }
        }
        self.resent_rows = resent_rows;
        if complete && flushed >= inserted {
            // This read went past `inserted`: every transaction committed before it was seen.
            end = end.max(inserted);
        }
        let moved = end > self.sent;
        if !changes.is_empty() || (moved && self.last_sent_at.elapsed() >= IDLE_POSITION_EVERY) {
            self.sent = end;
            if self.snapshot.as_ref().is_some_and(|s| self.sent >= s.until) {
                self.snapshot = None;
            }
            self.send(changes, outbox)?;
        }
        Ok(!complete)
    }

    /// Sends `changes` with the position after them.
    fn send(&mut self, changes: Vec<DocumentChange>, outbox: &Outbox) -> Result<(), Halt> {
        let position = Position { slot: self.slot.clone(), lsn: self.sent, snapshot: self.snapshot.clone() };
        let position = serde_json::to_value(&position).map_err(|e| {
            Halt::Fatal(Error::Config { source_name: self.name.clone(), reason: format!("its position: {e}") })
        })?;
        self.last_sent_at = Instant::now();
        outbox.changes_at(changes, position)
    }
}

/// `name` as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_saw_what_finished_before_it() {
        let snapshot = Snapshot::parse("100:105:101,103", Lsn(5000)).unwrap();
        assert!(snapshot.saw(99, Lsn(10)), "finished before xmin");
        assert!(snapshot.saw(102, Lsn(10)), "between, not running");
        assert!(!snapshot.saw(101, Lsn(10)), "running when it was taken");
        assert!(!snapshot.saw(105, Lsn(10)), "started after it");
        assert!(!snapshot.saw(99, Lsn(5000)), "committed at or after its position");
        assert_eq!(Snapshot::parse("7:7:", Lsn(1)).unwrap().xip, Vec::<u64>::new());
        assert!(Snapshot::parse("7:x:", Lsn(1)).is_err());
    }

    #[test]
    fn ids_are_widened_near_the_snapshots_epoch() {
        // xmax just past a wraparound: ids from before it are of the epoch before.
        let snapshot = Snapshot::parse(&format!("{}:{}:", (1u64 << 32) + 2, (1u64 << 32) + 5), Lsn(100)).unwrap();
        assert!(snapshot.saw(u32::MAX - 3, Lsn(1)));
        assert!(snapshot.saw(3, Lsn(1)));
        assert!(!snapshot.saw(6, Lsn(1)));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("Notes"), "\"Notes\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(PostgresSource::default_slot("postgres-0"), "twinflow_postgres_0");
    }
}
