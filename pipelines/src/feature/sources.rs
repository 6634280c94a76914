//! The configured sources, opened where their committed positions left
//! them; in a cluster, process 0 reads its share of each partitioned source.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use twinflow_connectors::IngestError;
use twinflow_schemas::api::{SourceState, SourceStatus};

use super::Error;
use crate::Context;

use twinflow_connectors::{
    FeedSource, FluvioSource, GitSource, KafkaSource, NdjsonSource, PostgresSource, SourceEvent, SourceHandle,
    WatchSource, WebSource,
};
use twinflow_dataflow::SubmitError;
use twinflow_schemas::ChangeLimits;
use twinflow_schemas::config::{Config, FluvioSourceConfig, KafkaSourceConfig, PartitionShare, SourceConfig};

use super::{AcceptError, Ingest, Origin};

/// A running source: its name and kind, its handle, and the events it sends.
#[derive(Debug)]
pub struct OpenedSource {
    pub name: String,
    /// `watch`, `ndjson`, `web`, `fluvio`, `kafka` or `git`.
    pub kind: &'static str,
    pub handle: SourceHandle,
    pub events: crossbeam_channel::Receiver<SourceEvent>,
}

/// Starts every source of `config` (sources resume from `positions`, the
/// ones committed with their last changes); changes are checked within `limits`.
pub fn open(
    config: &Config,
    data_dir: &Path,
    positions: &BTreeMap<String, serde_json::Value>,
    limits: &ChangeLimits,
) -> Result<Vec<OpenedSource>, Error> {
    let limits = *limits;
    let mut opened = Vec::new();
    // In a cluster, process 0 reads its share of each partitioned source (the others forward theirs).
    let share = config
        .engine
        .cluster
        .as_ref()
        .filter(|c| c.hosts.len() > 1)
        .map(|c| PartitionShare { index: 0, of: c.hosts.len() });
    for (i, source) in config.sources.iter().enumerate() {
        let (tx, rx) = crossbeam_channel::bounded(16);
        let kind = source_kind(source);
        let (name, handle) = match source {
            SourceConfig::Watch(watch) => {
                let name = source.name(i);
                let handle = WatchSource::spawn(name.clone(), watch.clone(), tx)
                    .with_context(|| format!("cannot watch {}", watch.path.display()))?;
                (name, handle)
            }
            SourceConfig::Ndjson(ndjson) => {
                let name = source.name(i);
                let handle = NdjsonSource::spawn(name.clone(), ndjson.clone(), limits, 500, tx)
                    .with_context(|| format!("cannot replay {}", ndjson.path.display()))?;
                (name, handle)
            }
            SourceConfig::Web(web) => {
                let name = source.name(i);
                let state_dir = data_dir.join("_sources").join(&name);
                let resume = positions.get(&name).cloned();
                let handle = WebSource::spawn(name.clone(), web.clone(), state_dir, resume, tx)
                    .with_context(|| format!("cannot start the web crawl {name}"))?;
                (name, handle)
            }
            SourceConfig::Fluvio(fluvio) => {
                let name = source.name(i);
                if share
                    .is_some_and(|s| !fluvio.partitions.is_empty() && !fluvio.partitions.iter().any(|p| s.takes(*p)))
                {
                    tracing::info!(source = %name, "none of its partitions falls to process 0");
                    continue;
                }
                let resume = match share {
                    Some(_) => super::forward::shared_resume(positions, &name),
                    None => positions.get(&name).cloned(),
                };
                let fluvio = FluvioSourceConfig { share, ..fluvio.clone() };
                let handle = FluvioSource::spawn(name.clone(), fluvio.clone(), limits, resume, tx)
                    .with_context(|| format!("cannot read Fluvio topic {:?} at {}", fluvio.topic, fluvio.endpoint))?;
                (name, handle)
            }
            SourceConfig::Kafka(kafka) => {
                let name = source.name(i);
                if share.is_some_and(|s| !kafka.partitions.is_empty() && !kafka.partitions.iter().any(|p| s.takes(*p)))
                {
                    tracing::info!(source = %name, "none of its partitions falls to process 0");
                    continue;
                }
                let resume = match share {
                    Some(_) => super::forward::shared_resume(positions, &name),
                    None => positions.get(&name).cloned(),
                };
                let kafka = KafkaSourceConfig { share, ..kafka.clone() };
                let handle = KafkaSource::spawn(name.clone(), kafka.clone(), limits, resume, tx)
                    .with_context(|| format!("cannot read Kafka topic {:?} at {}", kafka.topic, kafka.brokers))?;
                (name, handle)
            }
            SourceConfig::Feed(feed) => {
                let name = source.name(i);
                let resume = positions.get(&name).cloned();
                let handle = FeedSource::spawn(name.clone(), feed.clone(), resume, tx)
                    .with_context(|| format!("cannot follow the feed {}", feed.url))?;
                (name, handle)
            }
            SourceConfig::Postgres(pg) => {
                let name = source.name(i);
                let resume = positions.get(&name).cloned();
                let handle = PostgresSource::spawn(name.clone(), pg.clone(), limits, resume, tx)
                    .with_context(|| format!("cannot follow the Postgres tables {}", pg.tables.join(", ")))?;
                (name, handle)
            }
            SourceConfig::Git(git) => {
                let name = source.name(i);
                let resume = positions.get(&name).cloned();
                let handle = GitSource::spawn(name.clone(), git.clone(), resume, tx)
                    .with_context(|| format!("cannot follow the git repository {}", git.repo))?;
                (name, handle)
            }
        };
        tracing::info!(source = %name, "source started");
        opened.push(OpenedSource { name, kind, handle, events: rx });
    }
    Ok(opened)
}

/// The kind of a configured source, as `/v1/sources` names it.
fn source_kind(source: &SourceConfig) -> &'static str {
    match source {
        SourceConfig::Watch(_) => "watch",
        SourceConfig::Ndjson(_) => "ndjson",
        SourceConfig::Web(_) => "web",
        SourceConfig::Fluvio(_) => "fluvio",
        SourceConfig::Kafka(_) => "kafka",
        SourceConfig::Git(_) => "git",
        SourceConfig::Feed(_) => "feed",
        SourceConfig::Postgres(_) => "postgres",
    }
}

/// How long the changes-per-second rate looks back.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// What `/v1/sources` says of one running source: kept by its pump, which
/// also holds it back while it is paused.
#[derive(Debug)]
pub struct SourceGauge {
    pub name: String,
    pub kind: String,
    paused: AtomicBool,
    finished: AtomicBool,
    counts: Mutex<Counts>,
    /// Where the source says how far behind its upstream it is (Kafka, Postgres).
    lag: Option<twinflow_connectors::LagProbe>,
}

#[derive(Debug, Default)]
struct Counts {
    changes: u64,
    batches: u64,
    last_change_ms: Option<i64>,
    /// Batches of the last [`RATE_WINDOW`]: when, and how many changes.
    recent: std::collections::VecDeque<(Instant, u64)>,
    errors: u64,
    last_error: Option<IngestError>,
}

impl SourceGauge {
    pub fn new(name: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            paused: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            counts: Mutex::default(),
            lag: None,
        }
    }

    /// Shows the lag `probe` reports (a running source's [`SourceHandle::lag`]).
    pub fn with_lag(mut self, probe: twinflow_connectors::LagProbe) -> Self {
        self.lag = Some(probe);
        self
    }

    /// Holds the source's changes back (its channel fills and the source
    /// waits: nothing is lost) until [`SourceGauge::resume`]. Returns whether it changed.
    pub fn pause(&self) -> bool {
        !self.paused.swap(true, Ordering::SeqCst)
    }

    /// Lets the source's changes in again. Returns whether it changed.
    pub fn resume(&self) -> bool {
        self.paused.swap(false, Ordering::SeqCst)
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    fn accepted(&self, changes: usize) {
        let mut counts = self.counts.lock();
        counts.changes += changes as u64;
        counts.batches += 1;
        counts.last_change_ms = Some(twinflow_schemas::clock::now_ms());
        let now = Instant::now();
        counts.recent.push_back((now, changes as u64));
        while counts.recent.front().is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW) {
            counts.recent.pop_front();
        }
    }

    fn failed(&self, error: &IngestError) {
        let mut counts = self.counts.lock();
        counts.errors += 1;
        counts.last_error = Some(error.clone());
    }

    /// Where it stands; `position` is its committed one.
    pub fn status(&self, position: Option<serde_json::Value>) -> SourceStatus {
        let counts = self.counts.lock();
        let now = Instant::now();
        let recent: u64 =
            counts.recent.iter().filter(|(at, _)| now.duration_since(*at) <= RATE_WINDOW).map(|(_, n)| n).sum();
        let state = if self.finished.load(Ordering::SeqCst) {
            SourceState::Finished
        } else if self.is_paused() {
            SourceState::Paused
        } else {
            SourceState::Running
        };
        SourceStatus {
            name: self.name.clone(),
            kind: self.kind.clone(),
            state,
            changes: counts.changes,
            batches: counts.batches,
            changes_per_second: recent as f64 / RATE_WINDOW.as_secs_f64(),
            last_change_ms: counts.last_change_ms,
            position,
            lag: self.lag.as_ref().and_then(|probe| probe.get()),
            errors: counts.errors,
            last_error: counts.last_error.clone(),
        }
    }
}

/// Feeds a source's events through the ingest door until the source ends
/// or the engine stops, counting them in `gauge` and holding them back
/// while it is paused. A batch waits as long as the engine is behind (a
/// minute at a time, said in the log): sources never drop changes.
pub fn pump(ingest: &Ingest, events: crossbeam_channel::Receiver<SourceEvent>, gauge: &SourceGauge) {
    run_pump(ingest, events, gauge);
    gauge.finished.store(true, Ordering::SeqCst);
}

fn run_pump(ingest: &Ingest, events: crossbeam_channel::Receiver<SourceEvent>, gauge: &SourceGauge) {
    loop {
        if gauge.is_paused() {
            if ingest.is_stopping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let event = match events.recv_timeout(Duration::from_millis(100)) {
            Ok(event) => event,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        };
        match event {
            SourceEvent::Changes { source, changes, position } => {
                let count = changes.len();
                let span = tracing::info_span!("source_batch", %source, changes = count, epoch = tracing::field::Empty);
                let _span = span.enter();
                let origin = Origin::Source { name: source.clone(), position };
                let accepted = loop {
                    match ingest.accept_patiently(changes.clone(), origin.clone(), Duration::from_secs(60)) {
                        Err(e @ AcceptError::Refused(SubmitError::Overloaded { .. } | SubmitError::Behind { .. }))
                            if !ingest.is_stopping() =>
                        {
                            tracing::warn!(%source, error = %e, "source waiting: the engine is behind");
                        }
                        other => break other,
                    }
                };
                match accepted {
                    Ok(accepted) => {
                        span.record("epoch", accepted.epoch);
                        gauge.accepted(count);
                    }
                    Err(e) => {
                        tracing::info!(%source, error = %e, "source stopped: shutting down");
                        return;
                    }
                }
            }
            SourceEvent::Error(error) => {
                gauge.failed(&error);
                ingest.record_error(error);
            }
        }
    }
}
