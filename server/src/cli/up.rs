//! `twinflow up`: start the app and its sources (or the demo corpus), serve
//! HTTP (and pgwire) until Ctrl-C or SIGTERM, then commit and stop.

use std::sync::Arc;

use anyhow::Context;

use twinflow_connectors::demo;
use twinflow_schemas::config::{
    Config, GitSourceConfig, NdjsonSourceConfig, SourceConfig, WatchSourceConfig, WebSourceConfig,
};

use super::UpArgs;
use crate::app::App;
use crate::ui::say;

pub(super) fn up(mut config: Config, args: &UpArgs) -> anyhow::Result<()> {
    crate::cluster::stop_when_the_dataflow_fails();
    for dir in &args.watch {
        // One directory's files are `file:<path>`; with several, each gets `file:<its name>/<path>`.
        let doc_id_prefix = match (args.watch.len(), dir.file_name()) {
            (1, _) | (_, None) => WatchSourceConfig::default().doc_id_prefix,
            (_, Some(name)) => format!("file:{}/", name.to_string_lossy()),
        };
        config.sources.push(SourceConfig::Watch(WatchSourceConfig {
            path: dir.clone(),
            kind: args.watch_kind.into(),
            doc_id_prefix,
            ..WatchSourceConfig::default()
        }));
    }
    for url in &args.crawl {
        config
            .sources
            .push(SourceConfig::Web(WebSourceConfig { seeds: vec![url.clone()], ..WebSourceConfig::default() }));
    }
    for repo in &args.git {
        config.sources.push(SourceConfig::Git(GitSourceConfig { repo: repo.clone(), ..GitSourceConfig::default() }));
    }
    config.sources.extend(args.fluvio.iter().cloned().map(SourceConfig::Fluvio));
    config.sources.extend(args.kafka.iter().cloned().map(SourceConfig::Kafka));
    for file in &args.ingest {
        config.sources.push(SourceConfig::Ndjson(NdjsonSourceConfig { path: file.clone(), ..Default::default() }));
    }
    if let Some(addr) = args.pg {
        config.server.pg_addr = Some(addr);
    }
    if let Some(file) = &args.hostfile {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("cannot read the hostfile {}", file.display()))?;
        let mut hosts: Vec<String> =
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect();
        let processes = args.processes.unwrap_or(hosts.len());
        anyhow::ensure!(
            processes >= 1 && processes <= hosts.len(),
            "--processes {processes}, but {} lists {} hosts",
            file.display(),
            hosts.len()
        );
        hosts.truncate(processes);
        let process = args.process.unwrap_or(0);
        anyhow::ensure!(process < processes, "--process {process} is not below --processes {processes}");
        config.engine.cluster = Some(twinflow_schemas::config::ClusterConfig { process, hosts });
        if config.auth.cluster_secret.is_none() {
            // Beside the hostfile: the processes of one cluster share it (on one machine, or a shared folder).
            let path = file.with_file_name("twinflow-cluster.secret");
            let secret = twinflow_schemas::auth::load_or_create_secret(&path)
                .with_context(|| format!("cannot read or create the cluster secret {}", path.display()))?;
            config.auth.cluster_secret = Some(secret);
        }
        if process > 0 {
            return crate::cluster::worker_process(config);
        }
    }
    let display = if crate::ui::stderr_is_terminal() && !crate::ui::json_logs() {
        crate::app::ProgressDisplay::Bar
    } else {
        crate::app::ProgressDisplay::Log
    };
    let app = App::start_showing(config, display)?;
    start_sources(&app)?;
    if args.demo {
        start_demo(&app, args.demo_limit)?;
    }
    serve(app)
}

/// Serves HTTP (and pgwire when configured) until Ctrl-C or SIGTERM, then
/// stops `app` (a primary commits what it accepted).
pub(super) fn serve(app: Arc<App>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let addr = app.config.server.addr;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        if let Some(pg_addr) = app.config.server.pg_addr {
            let pg = tokio::net::TcpListener::bind(pg_addr)
                .await
                .with_context(|| format!("cannot listen on {pg_addr} (postgres)"))?;
            say(format_args!(
                "read-only SQL over the Postgres protocol on {}: psql -h {} -p {}",
                pg.local_addr()?,
                pg_addr.ip(),
                pg.local_addr()?.port()
            ));
            tokio::spawn(crate::listen::pg_server(&app)?.serve(pg));
        }
        // The handlers are in place before anyone is told we serve: a SIGTERM
        // right after "serving on" stops gracefully instead of killing.
        let shutdown = shutdown_signal()?;
        let data = match app.replica() {
            Some(_) => format!("a read replica following {}", app.config.storage.data_dir.display()),
            None => format!("data in {}", app.config.storage.data_dir.display()),
        };
        say(format_args!(
            "twinflow serving on {}://{} — {data} — Ctrl-C to stop",
            crate::listen::scheme(&app),
            listener.local_addr()?,
        ));
        match app.gate.admin_key_file() {
            Some(file) => say(format_args!(
                "API key: the admin key is in {} (the CLI reads it there; the dashboard asks for it)",
                file.display()
            )),
            None if app.gate.needs_keys() => say("API keys: the ones in [auth] keys"),
            None => say("API keys: none needed ([auth] mode = \"none\", loopback only)"),
        }
        crate::listen::serve_http(app.clone(), listener, shutdown).await
    });
    if app.replica().is_none() {
        say("stopping: committing accepted changes…");
    }
    let stopped = app.shutdown();
    served?;
    stopped?;
    say(format_args!("stopped at epoch {}", app.store.committed_epoch()));
    Ok(())
}

/// Registers the SIGINT and SIGTERM handlers now (tokio's `ctrl_c()` and an
/// unpolled stream would only register on first poll, leaving a window in
/// which the default action kills the process) and returns the future that
/// completes on the first of them.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// Starts every configured source and attaches it to the engine.
pub fn start_sources(app: &Arc<App>) -> anyhow::Result<()> {
    let opened = twinflow_pipelines::feature::sources::open(
        &app.config,
        app.store.data_dir(),
        &app.store.source_positions(),
        app.primary()?.ingest.limits(),
    )?;
    for source in opened {
        app.attach_source(source.name, source.kind, Some(source.handle), source.events)?;
    }
    Ok(())
}

/// Fetches (once) and ingests the demo corpus in the background, 16
/// speeches at a time: each batch is sent once the one before the last is
/// committed, so the model always has work and the corpus becomes
/// searchable batch by batch instead of all at the end.
fn start_demo(app: &Arc<App>, limit: Option<usize>) -> anyhow::Result<()> {
    const BATCH: usize = 16;
    let cache = demo::default_cache_dir();
    let dir = demo::fetch_sotu(&cache).context("cannot fetch the demo corpus")?;
    let changes = demo::sotu_changes(&dir, limit)?;
    say(format_args!("ingesting {} State of the Union speeches from {}", changes.len(), dir.display()));
    let (tx, rx) = crossbeam_channel::bounded(1);
    let engine = app.engine()?.clone();
    std::thread::Builder::new().name("demo".into()).spawn(move || {
        for batch in changes.chunks(BATCH) {
            while engine.stats().pending_changes > BATCH {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let event = twinflow_connectors::SourceEvent::Changes {
                source: "demo".into(),
                changes: batch.to_vec(),
                position: None,
            };
            if tx.send(event).is_err() {
                return;
            }
        }
    })?;
    app.attach_source("demo".into(), "demo", None, rx)
}

/// `twinflow serve --follow DIR`: a read replica of the primary whose data
/// directory is DIR, serving the read routes until Ctrl-C or SIGTERM.
pub(super) fn serve_replica(config: Config) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.replica.follow.is_some(),
        "`twinflow serve` is a read replica: name the primary's data directory with --follow DIR (or [replica] follow)"
    );
    let app = App::start_replica(config)?;
    serve(app)
}
