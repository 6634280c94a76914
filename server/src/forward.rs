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
//! not committed, so it is read again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use twinflow_connectors::{FluvioSource, KafkaSource, SourceEvent, SourceHandle};
use twinflow_schemas::ChangeLimits;
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
    pub fn start(config: &Config, cluster: &ClusterConfig) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let sources: Vec<(String, SourceConfig)> = config
            .sources
            .iter()
            .enumerate()
            .filter_map(|(i, source)| match source {
                SourceConfig::Kafka(_) => Some((format!("kafka-{i}@p{}", cluster.process), source.clone())),
                SourceConfig::Fluvio(_) => Some((format!("fluvio-{i}@p{}", cluster.process), source.clone())),
                _ => None,
            })
            .collect();
        if sources.is_empty() {
            return Ok(Self { stop, thread: None });
        }
        let base = process_0_url(config, cluster)?;
        let share = PartitionShare { index: cluster.process, of: cluster.hosts.len() };
        let limits = ChangeLimits {
            max_document_bytes: config.server.max_document.as_u64() as usize,
            ..ChangeLimits::default()
        };
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("forward-sources".into())
            .spawn(move || run(&base, sources, share, limits, &flag))?;
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
fn process_0_url(config: &Config, cluster: &ClusterConfig) -> anyhow::Result<String> {
    let host = cluster.hosts.first().context("the hostfile lists no process")?;
    let host = host.rsplit_once(':').map_or(host.as_str(), |(host, _)| host);
    Ok(format!("http://{host}:{}", config.server.addr.port()))
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap_or_default()
}

/// The committed source positions process 0 reports, once it serves.
fn committed_positions(http: &reqwest::blocking::Client, base: &str) -> Option<Value> {
    let status: Value = http.get(format!("{base}/v1/status")).send().ok()?.error_for_status().ok()?.json().ok()?;
    Some(status["sources"]["positions"].clone())
}

fn run(
    base: &str,
    sources: Vec<(String, SourceConfig)>,
    share: PartitionShare,
    limits: ChangeLimits,
    stop: &Arc<AtomicBool>,
) {
    let http = http();
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
        let resume = positions.get(&name).filter(|p| !p.is_null()).cloned();
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
                let (source, base, http, stop) = (name.clone(), base.to_owned(), http.clone(), stop.clone());
                pumps.push(std::thread::spawn(move || pump(&source, &rx, &http, &base, &stop)));
                handles.push((name, handle));
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

/// Sends each event of one source to process 0, in order: a batch is sent
/// again until it is accepted (503 `overloaded`, or process 0 not
/// answering), or until the forwarding stops.
fn pump(
    name: &str,
    events: &crossbeam_channel::Receiver<SourceEvent>,
    http: &reqwest::blocking::Client,
    base: &str,
    stop: &AtomicBool,
) {
    let url = format!("{base}/v1/internal/source-changes");
    loop {
        let event = match events.recv_timeout(Duration::from_millis(100)) {
            Ok(event) => event,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) if !stop.load(Ordering::Acquire) => continue,
            Err(_) => return,
        };
        let body = match event {
            SourceEvent::Changes { changes, position, .. } => {
                json!({ "source": name, "changes": changes, "position": position })
            }
            SourceEvent::Error(error) => json!({
                "source": name,
                "errors": [{ "location": error.location, "reason": error.reason, "at_ms": error.at_ms }],
            }),
        };
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
                    // Checked by the source already: refused only if the two processes disagree on limits.
                    let status = response.status();
                    tracing::error!(
                        source = name, %status, answer = %response.text().unwrap_or_default(),
                        "process 0 refused a batch of this source; it is skipped"
                    );
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }
}
