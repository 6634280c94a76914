//! The configured sources, opened where their committed positions left
//! them; in a cluster, process 0 reads its share of each partitioned source.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::Error;
use crate::Context;

use twinflow_connectors::{
    FluvioSource, GitSource, KafkaSource, NdjsonSource, SourceEvent, SourceHandle, WatchSource, WebSource,
};
use twinflow_dataflow::SubmitError;
use twinflow_schemas::ChangeLimits;
use twinflow_schemas::config::{Config, FluvioSourceConfig, KafkaSourceConfig, PartitionShare, SourceConfig};

use super::{AcceptError, Ingest, Origin};

/// A running source: its name, its handle, and the events it sends.
#[derive(Debug)]
pub struct OpenedSource {
    pub name: String,
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
            SourceConfig::Git(git) => {
                let name = source.name(i);
                let resume = positions.get(&name).cloned();
                let handle = GitSource::spawn(name.clone(), git.clone(), resume, tx)
                    .with_context(|| format!("cannot follow the git repository {}", git.repo))?;
                (name, handle)
            }
        };
        tracing::info!(source = %name, "source started");
        opened.push(OpenedSource { name, handle, events: rx });
    }
    Ok(opened)
}

/// Feeds a source's events through the ingest door until the source ends
/// or the engine stops. A batch waits as long as the engine is behind (a
/// minute at a time, said in the log): sources never drop changes.
pub fn pump(ingest: &Ingest, events: crossbeam_channel::Receiver<SourceEvent>) {
    for event in events {
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
                    }
                    Err(e) => {
                        tracing::info!(%source, error = %e, "source stopped: shutting down");
                        return;
                    }
                }
            }
            SourceEvent::Error(error) => ingest.record_error(error),
        }
    }
}
