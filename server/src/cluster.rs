//! The cluster's side of `twinflow up`: what a process other than 0 runs,
//! and how every process stops when the cluster breaks.

use anyhow::Context;

use twinflow_schemas::config::Config;

use crate::ui::say;

/// Makes a panic on one of timely's threads (a worker, or the network
/// threads of a cluster) end the process with exit code 1 and a clear
/// error, instead of leaving it serving with a dataflow that no longer
/// commits. Timely reports a dead or unreachable peer process only by
/// panicking its network threads ("timely communication error: …").
/// Nothing acknowledged is lost: the input log replays it at restart.
pub(crate) fn stop_when_the_dataflow_fails() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        let thread = std::thread::current().name().unwrap_or_default().to_owned();
        if !thread.starts_with("timely:") {
            return;
        }
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("unknown");
        let why = if message.contains("communication error") {
            "a process of the cluster stopped or its connection broke"
        } else {
            "a dataflow worker failed"
        };
        tracing::error!(
            thread,
            message,
            "{why}: stopping this process; start every process of the cluster again \
             (acknowledged changes are replayed from the input log)"
        );
        std::process::exit(1);
    }));
}

/// A process other than 0 of a cluster: the engine's workers only, until
/// process 0 stops (its sources, HTTP, store and committer are process 0's).
pub(crate) fn worker_process(config: Config) -> anyhow::Result<()> {
    let cluster = config.engine.cluster.clone().context("not in a cluster")?;
    let embedder = twinflow_pipelines::feature::embedder::build_embedder(&config.embedder)?;
    let mut options = twinflow_dataflow::EngineOptions::new(&config.engine, &config.chunking).with_drift(&config.drift);
    // Its own embedding cache (under the data directory, apart from process 0's files), so
    // after a restart it encodes none of its share of the restored chunks again.
    let mut seed = None;
    if config.storage.embedding_cache {
        let dir = config.storage.data_dir.join(format!("_process-{}", cluster.process));
        options.vector_sink =
            Some(twinflow_pipelines::feature::open_vector_cache(&dir, embedder.as_ref(), 0, &mut seed)?);
    }
    say(format_args!(
        "twinflow process {} of {} ({} workers): connecting to {}…",
        cluster.process,
        cluster.hosts.len(),
        config.engine.workers,
        cluster.hosts.join(", ")
    ));
    let engine = twinflow_dataflow::Engine::start(options, embedder, seed)?;
    say("connected: chunking and embedding this process's share until process 0 stops");
    let forwarding = twinflow_pipelines::feature::forward::SourceForwarding::start(&config, &cluster)?;
    engine.shutdown()?;
    forwarding.stop();
    say(format_args!("process 0 stopped: exiting ({} texts embedded here)", engine.stats().texts_embedded));
    Ok(())
}
