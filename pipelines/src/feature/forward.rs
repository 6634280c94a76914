//! Partitioned sources in a cluster's other processes.
//!
//! Process `I` of `P` reads the partitions `p` with `p % P == I` of every
//! Kafka and Fluvio source (process 0 reads its own share itself) and sends
//! each batch, with the position it has read to, to process 0
//! (`POST /v1/internal/source-changes`). Process 0 accepts it like a batch
//! of its own sources: the changes go to the dataflow, which spreads them
//! over every worker by `doc_id`, and the position is committed with their
//! epoch, under the name `<source>@p<I>` (`kafka-0@p1`).
//!
//! At start this process reads its committed positions back from process 0
//! (`GET /v1/status`) and resumes there: a restart replays nothing
//! committed. Once a position is committed, its source is told, so a Kafka
//! source commits the consumer group's offsets as process 0's do. A batch
//! not yet accepted when process 0 goes away is not lost: its position was
//! not committed, so it is read again. Every request carries the
//! cluster's shared secret as its Bearer token (`[auth] cluster_secret`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::Error;
use crate::Context;
use serde_json::Value;

use twinflow_connectors::{FluvioSource, KafkaSource, SourceEvent, SourceHandle};
use twinflow_schemas::ChangeLimits;
use twinflow_schemas::api::{ForwardedBatch, ForwardedError, SourcesStatus};
use twinflow_schemas::config::{
    ClusterConfig, Config, FluvioSourceConfig, KafkaSourceConfig, PartitionShare, SourceConfig,
};

/// How often committed positions are read back from process 0.
const POSITIONS_EVERY: Duration = Duration::from_millis(500);

/// The forwarding of this process's share of the partitioned sources.
#[derive(Debug)]
pub struct SourceForwarding {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SourceForwarding {
    /// Starts reading this process's share of every Kafka and Fluvio source
    /// once process 0 serves (none configured: nothing runs).
    pub fn start(config: &Config, cluster: &ClusterConfig) -> Result<Self, Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let sources: Vec<(String, SourceConfig)> = config
            .sources
            .iter()
            .enumerate()
            .filter_map(|(i, source)| match source {
                SourceConfig::Kafka(_) => Some((format!("kafka-{i}"), source.clone())),
                SourceConfig::Fluvio(_) => Some((format!("fluvio-{i}"), source.clone())),
                _ => None,
            })
            .collect();
        if sources.is_empty() {
            return Ok(Self { stop, thread: None });
        }
        let base = process_0_url(config, cluster)?;
        let secret = config.auth.cluster_secret.as_deref().ok_or_else(|| {
            Error::Config("a process of a cluster needs the cluster's secret ([auth] cluster_secret)".into())
        })?;
        let roots = config.server.tls.as_ref().map(crate::http::tls_roots).transpose().map_err(Error::Config)?;
        let http = crate::http::blocking_client_trusting(Duration::from_secs(60), Some(secret), roots.as_deref())
            .map_err(Error::Config)?;
        let share = PartitionShare { index: cluster.process, of: cluster.hosts.len() };
        let limits = ChangeLimits {
            max_document_bytes: config.server.max_document.as_u64() as usize,
            ..ChangeLimits::default()
        };
        // Process 0 takes bodies up to its `max_body` (the same configuration): half of it, to be safe.
        let max_request = (config.server.max_body.as_u64() as usize / 2).max(1 << 20);
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("forward-sources".into())
            .spawn(move || run(&http, &base, sources, share, limits, max_request, &flag))
            .context("cannot start the forwarding thread")?;
        Ok(Self { stop, thread: Some(thread) })
    }

    /// Stops the sources and the forwarding (a batch not yet accepted is read again at the next start).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Process 0's HTTP address: its host in the hostfile, the configured port.
fn process_0_url(config: &Config, cluster: &ClusterConfig) -> Result<String, Error> {
    let host = cluster.hosts.first().ok_or_else(|| Error::Config("the hostfile lists no process".into()))?;
    let host = host.rsplit_once(':').map_or(host.as_str(), |(host, _)| host);
    let scheme = if config.server.tls.is_some() { "https" } else { "http" };
    Ok(format!("{scheme}://{host}:{}", config.server.addr.port()))
}

/// The part of process 0's `GET /v1/status` the forwarding reads (the
/// rest, models and drift, is no concern of it and is not read).
#[derive(serde::Deserialize)]
struct Status {
    #[serde(default)]
    sources: SourcesStatus,
}

/// The committed source positions process 0 reports, once it serves.
fn committed_positions(http: &reqwest::blocking::Client, base: &str) -> Option<BTreeMap<String, Value>> {
    let status: Status = http.get(format!("{base}/v1/status")).send().ok()?.error_for_status().ok()?.json().ok()?;
    Some(status.sources.positions)
}

/// Where a source's share resumes: per partition the furthest committed
/// offset under its name or any process's (`<name>@p<I>`), so a partition
/// that moved to another process when the cluster changed size resumes
/// where it was left.
pub(crate) fn shared_resume<'a>(
    positions: impl IntoIterator<Item = (&'a String, &'a Value)>,
    name: &str,
) -> Option<Value> {
    let prefix = format!("{name}@p");
    let entries = positions.into_iter().filter(|(k, v)| (*k == name || k.starts_with(&prefix)) && !v.is_null());
    twinflow_connectors::merge_positions(entries.map(|(_, v)| v))
}

fn run(
    http: &reqwest::blocking::Client,
    base: &str,
    sources: Vec<(String, SourceConfig)>,
    share: PartitionShare,
    limits: ChangeLimits,
    max_request: usize,
    stop: &Arc<AtomicBool>,
) {
    // Process 0 serves once every process is connected and its store is open.
    let positions = loop {
        if stop.load(Ordering::Acquire) {
            return;
        }
        match committed_positions(&http, base) {
            Some(positions) => break positions,
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let mut handles: Vec<(String, SourceHandle)> = Vec::new();
    let mut pumps = Vec::new();
    for (name, source) in sources {
        let (tx, rx) = crossbeam_channel::bounded(16);
        // The documents name the source as process 0 does; the position is this process's own.
        let key = format!("{name}@p{}", share.index);
        let resume = shared_resume(&positions, &name);
        let spawned = match source {
            SourceConfig::Kafka(kafka) => {
                KafkaSource::spawn(name.clone(), KafkaSourceConfig { share: Some(share), ..kafka }, limits, resume, tx)
            }
            SourceConfig::Fluvio(fluvio) => FluvioSource::spawn(
                name.clone(),
                FluvioSourceConfig { share: Some(share), ..fluvio },
                limits,
                resume,
                tx,
            ),
            _ => continue,
        };
        match spawned {
            Ok(handle) => {
                tracing::info!(source = %name, process = share.index, "reading this process's share of the partitions");
                let (source, base, http, stop) = (key.clone(), base.to_owned(), http.clone(), stop.clone());
                pumps.push(std::thread::spawn(move || pump(&source, &rx, &http, &base, &stop, max_request)));
                handles.push((key, handle));
            }
            // E.g. more processes than partitions: nothing falls to this one.
            Err(e) => tracing::warn!(source = %name, error = %e, "not reading this source here"),
        }
    }
    // Committed positions back to their sources (a Kafka source then commits the group's offsets).
    let mut told: HashMap<String, Value> = HashMap::new();
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(POSITIONS_EVERY);
        let Some(positions) = committed_positions(&http, base) else { continue };
        for (name, handle) in &handles {
            if let Some(position) = positions.get(name).filter(|p| !p.is_null())
                && told.get(name) != Some(position)
            {
                let _ = handle.committed_sender().send(position.clone());
                told.insert(name.clone(), position.clone());
            }
        }
    }
    for (_, handle) in handles {
        handle.stop();
    }
    for pump in pumps {
        let _ = pump.join();
    }
}

/// Sends each event of one source to process 0, in order: a batch goes in
/// requests of at most `max_request` bytes (its position with the last),
/// each sent again until it is accepted (503 `overloaded`, or process 0 not
/// answering) or the forwarding stops. A batch process 0 refuses (4xx) stops
/// this source's forwarding, loudly: its position is never committed past it.
fn pump(
    key: &str,
    events: &crossbeam_channel::Receiver<SourceEvent>,
    http: &reqwest::blocking::Client,
    base: &str,
    stop: &AtomicBool,
    max_request: usize,
) {
    let url = format!("{base}/v1/internal/source-changes");
    loop {
        let event = match events.recv_timeout(Duration::from_millis(100)) {
            Ok(event) => event,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) if !stop.load(Ordering::Acquire) => continue,
            Err(_) => return,
        };
        let bodies = match event {
            SourceEvent::Changes { changes, position, .. } => requests(key, &changes, position, max_request),
            SourceEvent::Error(error) => vec![ForwardedBatch {
                source: key.to_owned(),
                changes: Vec::new(),
                position: None,
                errors: vec![ForwardedError { location: error.location, reason: error.reason, at_ms: error.at_ms }],
            }],
        };
        for body in bodies {
            loop {
                if stop.load(Ordering::Acquire) {
                    return;
                }
                match http.post(&url).json(&body).send() {
                    Ok(response) if response.status().is_success() => break,
                    Ok(response) if response.status().is_server_error() => {
                        std::thread::sleep(Duration::from_secs(1));
                    }
                    Ok(response) => {
                        let status = response.status();
                        tracing::error!(
                            source = key, %status, answer = %response.text().unwrap_or_default(),
                            "process 0 refused a batch of this source: its forwarding stops here \
                             (nothing after it is committed; restart the cluster once fixed)"
                        );
                        return;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(500)),
                }
            }
        }
    }
}

/// The request bodies of one batch: its changes split so that each body
/// stays under `max_request` bytes, the position with the last.
fn requests(
    key: &str,
    changes: &[twinflow_schemas::DocumentChange],
    position: Option<Value>,
    max_request: usize,
) -> Vec<ForwardedBatch> {
    let batch = |changes| ForwardedBatch { source: key.to_owned(), changes, position: None, errors: Vec::new() };
    let mut bodies = Vec::new();
    let (mut part, mut bytes) = (Vec::new(), 0usize);
    for change in changes {
        let value = serde_json::to_value(change).unwrap_or(Value::Null);
        let size = value.to_string().len();
        if !part.is_empty() && bytes + size > max_request {
            bodies.push(batch(std::mem::take(&mut part)));
            bytes = 0;
        }
        bytes += size;
        part.push(value);
    }
    bodies.push(ForwardedBatch { position, ..batch(part) });
    bodies
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use twinflow_schemas::DocumentChange;

    #[test]
    fn a_batch_goes_in_bounded_requests_with_its_position_last() {
        let changes: Vec<DocumentChange> =
            (0..10).map(|i| DocumentChange::Delete { doc_id: format!("doc-{i:04}") }).collect();
        let one = serde_json::to_value(&changes[0]).unwrap().to_string().len();
        let bodies = requests("kafka-0@p1", &changes, Some(json!({ "offsets": { "1": 10 } })), 3 * one);
        assert_eq!(bodies.len(), 4, "{bodies:?}");
        assert!(bodies.iter().all(|b| b.changes.len() <= 3 && b.source == "kafka-0@p1"));
        let sent: usize = bodies.iter().map(|b| b.changes.len()).sum();
        assert_eq!(sent, 10);
        assert!(bodies[..3].iter().all(|b| b.position.is_none()));
        assert_eq!(bodies[3].position.as_ref().unwrap()["offsets"]["1"], 10);
        // Sent as JSON, only the last body names a position.
        let sent = serde_json::to_value(&bodies[0]).unwrap();
        assert!(sent.get("position").is_none() && sent.get("errors").is_none(), "{sent}");
    }

    #[test]
    fn a_share_resumes_from_every_process_s_offsets() {
        let positions = json!({
            "kafka-0": { "topic": "t", "offsets": { "0": 7, "2": 3 } },
            "kafka-0@p1": { "topic": "t", "offsets": { "1": 5, "3": 2 } },
            "kafka-1": { "topic": "u", "offsets": { "0": 100 } },
        });
        let positions = positions.as_object().unwrap();
        let merged = shared_resume(positions, "kafka-0").unwrap();
        assert_eq!(merged["offsets"], json!({ "0": 7, "1": 5, "2": 3, "3": 2 }));
        assert_eq!(shared_resume(positions, "fluvio-0"), None);
    }
}
