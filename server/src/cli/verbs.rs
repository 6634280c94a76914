//! The verbs that talk to a running server (train, ingest, sql) or read
//! a data directory offline (sql --data-dir).

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use twinflow_schemas::api::{SqlFormat, TrainingStarted};
use twinflow_schemas::training::JobStatus;
use twinflow_schemas::{ChangeLimits, parse_change};

use super::{IngestArgs, OutputFormat, ServerArgs, SqlArgs};
use crate::client::Client;

/// `twinflow train`, `twinflow twin train`: start a run (`start`), follow
/// it (`status`: the job's status), print the outcome.
pub(super) fn train<E: serde::Serialize>(
    args: &ServerArgs,
    status: impl Fn(&Client) -> anyhow::Result<JobStatus<E>>,
    start: impl Fn(&Client) -> anyhow::Result<TrainingStarted<E>>,
) -> anyhow::Result<()> {
    let client = args.client()?;
    let before = status(&client)?.runs;
    start(&client)?;
    let mut last_phase = String::new();
    // On a terminal, one bar over the run's steps; piped, one line per phase.
    let bar = crate::ui::stderr_is_terminal().then(|| crate::ui::bar(0, "steps"));
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let training = status(&client)?;
        let (phase, steps) = (training.phase.clone(), training.steps as u64);
        if let Some(bar) = &bar {
            bar.set_message(format!("training: {phase}"));
            bar.set_length(steps);
            bar.set_position(training.step as u64);
        } else if phase != last_phase && !phase.is_empty() {
            if phase == "train" && steps > 0 {
                eprintln!("training: {phase} ({steps} steps)");
            } else {
                eprintln!("training: {phase}");
            }
        }
        last_phase = phase;
        if training.runs > before && training.state == "idle" {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            if let Some(error) = &training.last_error {
                anyhow::bail!("training failed: {error}");
            }
            println!("{}", serde_json::to_string_pretty(&training.last)?);
            return Ok(());
        }
    }
}

pub(super) fn ingest(args: &IngestArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    let limits = ChangeLimits::default();
    let (mut sent, mut bad) = (0usize, 0usize);
    let mut last_epoch = 0;
    let total: u64 = args.files.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    let bar = crate::ui::byte_bar(total);
    for path in &args.files {
        bar.set_message(format!("sending {}", path.display()));
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut batch: Vec<u8> = Vec::new();
        let mut in_batch = 0;
        for (index, line) in std::io::BufReader::new(file).split(b'\n').enumerate() {
            let line = line.with_context(|| format!("cannot read {}", path.display()))?;
            bar.inc(line.len() as u64 + 1);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if let Err(e) = parse_change(&line, index + 1, &limits) {
                bar.suspend(|| eprintln!("{}:{}: skipped: {} ({:?})", path.display(), index + 1, e.message, e.code));
                bad += 1;
                continue;
            }
            batch.extend_from_slice(&line);
            batch.push(b'\n');
            in_batch += 1;
            if in_batch == args.batch {
                last_epoch = client.ingest(std::mem::take(&mut batch), false)?.epoch;
                sent += in_batch;
                in_batch = 0;
            }
        }
        if in_batch > 0 {
            last_epoch = client.ingest(batch, false)?.epoch;
            sent += in_batch;
        }
    }
    bar.finish_and_clear();
    if args.wait && sent > 0 {
        let waiting = crate::ui::spinner(format!("waiting for epoch {last_epoch} to be committed"));
        loop {
            if client.status()?.committed_epoch >= last_epoch {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        waiting.finish_and_clear();
    }
    println!("sent {sent} changes (last epoch {last_epoch}); skipped {bad} bad lines");
    Ok(())
}

pub(super) fn sql(args: &SqlArgs) -> anyhow::Result<()> {
    if matches!(args.format, OutputFormat::Parquet) && console::Term::stdout().is_term() {
        anyhow::bail!(
            "--format parquet writes a binary file: redirect it, e.g. `twinflow sql \"…\" --format parquet > answer.parquet`"
        );
    }
    let mut out = std::io::stdout().lock();
    if let Some(dir) = &args.data {
        return sql_offline(dir, &args.sql, args.format, &mut out);
    }
    let client = args.server.client()?;
    match args.format {
        OutputFormat::Csv => out.write_all(&client.sql(&args.sql, SqlFormat::Csv)?)?,
        OutputFormat::Json => out.write_all(&client.sql(&args.sql, SqlFormat::Json)?)?,
        OutputFormat::Parquet => out.write_all(&client.sql(&args.sql, SqlFormat::Parquet)?)?,
        OutputFormat::Table => {
            let bytes = client.sql(&args.sql, SqlFormat::Arrow)?;
            let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
            let batches = reader.collect::<Result<Vec<_>, _>>()?;
            writeln!(out, "{}", arrow::util::pretty::pretty_format_batches(&batches)?)?;
        }
    }
    Ok(())
}

fn sql_offline(dir: &Path, sql: &str, format: OutputFormat, out: &mut impl Write) -> anyhow::Result<()> {
    let manifest = twinflow_sinks::Manifest::load(dir)?
        .with_context(|| format!("{} has no _manifest.json: nothing was committed there", dir.display()))?;
    // With the default shards, so the vector index saved with the snapshot is loaded, not rebuilt.
    let shards = twinflow_schemas::config::SearchConfig::default().shards;
    let store = twinflow_sinks::Store::open_sharded(dir, manifest.dim, &Default::default(), shards)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let answer = runtime.block_on(store.sql(sql))?;
    match format {
        OutputFormat::Table => writeln!(out, "{}", arrow::util::pretty::pretty_format_batches(&answer.batches)?)?,
        OutputFormat::Csv => out.write_all(&twinflow_sinks::encode_csv(&answer.batches)?)?,
        OutputFormat::Json => {
            let rows = twinflow_sinks::encode_json_rows(&answer.batches)?;
            writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        }
        OutputFormat::Parquet => out.write_all(&twinflow_sinks::encode_parquet(&answer.schema, &answer.batches)?)?,
    }
    Ok(())
}

/// `twinflow twin export`: the merged model in `format` and the bare adapter
/// (PEFT) under `out`; returns what was written.
pub(super) fn export_twin(
    config: &twinflow_schemas::config::Config,
    version: &str,
    format: super::ExportFormat,
    out: Option<std::path::PathBuf>,
) -> anyhow::Result<serde_json::Value> {
    use twinflow_models::llama::export::{export_gguf, export_peft, export_safetensors};
    let version: u64 = version
        .trim_start_matches('v')
        .parse()
        .with_context(|| format!("{version:?} is not a version (`v3` or `3`)"))?;
    let registry = twinflow_models::Registry::<twinflow_models::TwinCard>::open(
        &twinflow_pipelines::training::twin::registry_dir(config),
    )?;
    let card = registry.card(version).with_context(|| format!("twin version {version}"))?;
    let lora = registry.lora(version).with_context(|| format!("twin version {version}'s adapter"))?;
    let (gguf_path, _) = twinflow_pipelines::inference::LazyGenerator::new(config.generator.clone()).local_gguf()?;
    let sha = twinflow_models::fetch::sha256_file(&gguf_path)?;
    anyhow::ensure!(
        sha == card.base_sha256,
        "twin v{version} was trained on {} (sha256 {}), but the configured model {} differs",
        card.base_model,
        card.base_sha256,
        gguf_path.display()
    );
    let base = twinflow_models::gguf::Gguf::open(&gguf_path)?;
    let name = format!("{}+twin-v{version}", card.base_model);
    let suffix = match format {
        super::ExportFormat::Gguf => "gguf",
        super::ExportFormat::Safetensors => "safetensors",
    };
    let out = out.unwrap_or_else(|| std::path::PathBuf::from(format!("twin-v{version}-{suffix}")));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let model = match format {
        super::ExportFormat::Gguf => export_gguf(&base, Some(&lora), &name, &out.join(format!("{name}.gguf")))?,
        super::ExportFormat::Safetensors => export_safetensors(&base, Some(&lora), &out)?,
    };
    let adapter = export_peft(&base, &lora, &card.base_model, &out.join("adapter"))?;
    Ok(serde_json::json!({
        "version": version,
        "model": name,
        "format": suffix,
        "merged_projections": model.merged,
        "files": model.files.iter().chain(&adapter.files).map(|p| p.display().to_string()).collect::<Vec<_>>(),
    }))
}
