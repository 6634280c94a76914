//! `twinflow-bench subscriptions`: what keeping many standing questions
//! answered costs each commit.
//!
//! ```text
//!  synthetic corpus (8 speech sentences per document), MiniLM ─▶ App (in process)
//!  A: rounds of edits with no subscription          ─▶ commit latency (submit → committed)
//!  N subscriptions (a span of a random sentence each, created 4 at a time)
//!  B: the same kind of rounds with N subscriptions  ─▶ commit latency, per round: subscriptions
//!     searched again and why, matching and round time, events; event latency (commit visible → event received)
//!  check: every subscription searched again from scratch, its top-k compared with the one kept
//!         (and the time of that pass: what re-running every subscription at each commit would cost)
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use parking_lot::Mutex;
use serde_json::{Value, json};

use twinflow_pipelines::inference::subscriptions::{Mode, NewSubscription};
use twinflow_schemas::api::SearchFilter;
use twinflow_schemas::config::Config;
use twinflow_schemas::{ChangeLimits, parse_change};

use crate::peers::{Rng, sentences, speeches, synthetic};

/// Settings of the bench.
#[derive(Clone, Debug)]
pub struct StandingBench {
    pub docs: usize,
    pub subscriptions: usize,
    pub rounds: usize,
    /// Documents rewritten per round (one sentence each replaced).
    pub edits: usize,
    /// `hybrid`, `vector` or `bm25`.
    pub mode: String,
    pub k: usize,
    /// `[subscriptions] restat_share` (BM25 statistics refresh).
    pub restat: f64,
}

fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn upsert(doc_id: &str, content: &str) -> String {
    json!({ "op": "upsert", "doc_id": doc_id, "kind": "article", "author": "bench", "title": doc_id,
            "url": format!("https://example.com/{doc_id}"), "content": content })
    .to_string()
}

/// Submits `lines` and waits until their epoch is committed and followed:
/// (epoch, seconds to committed).
fn ingest(app: &twinflow_server::App, lines: &[String]) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let changes = lines
        .iter()
        .map(|l| parse_change(l.as_bytes(), 1, &ChangeLimits::default()).map_err(|e| anyhow::anyhow!("{e:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let epoch = app.engine().unwrap().submit(changes).map_err(|e| anyhow::anyhow!("{e}"))?;
    app.engine().unwrap().flush();
    anyhow::ensure!(
        app.engine().unwrap().wait_committed(epoch, Duration::from_secs(600)),
        "epoch {epoch} never committed"
    );
    let committed = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(600);
    while app.primary().unwrap().subscriptions.stats().followed < epoch {
        anyhow::ensure!(Instant::now() < deadline, "the subscriptions never followed epoch {epoch}");
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok((epoch, committed))
}

/// One round: `edits` random documents each get one sentence replaced by
/// another of `pool`; (epoch, seconds to committed).
fn edit_round(
    app: &twinflow_server::App,
    docs: &mut [(String, String)],
    pool: &[String],
    rng: &mut Rng,
    edits: usize,
) -> anyhow::Result<(u64, f64)> {
    let mut lines = Vec::with_capacity(edits);
    for _ in 0..edits {
        let d = rng.below(docs.len());
        let mut parts = sentences(&docs[d].1);
        let at = rng.below(parts.len().max(1));
        if let Some(part) = parts.get_mut(at) {
            *part = pool[rng.below(pool.len())].clone();
        }
        docs[d].1 = parts.join(" ");
        lines.push(upsert(&docs[d].0, &docs[d].1));
    }
    ingest(app, &lines)
}

/// Runs the bench and returns its report.
pub fn run(bench: &StandingBench) -> anyhow::Result<Value> {
    let mode = Mode::parse(&bench.mode).context("--mode: hybrid, vector or bm25")?;
    let speeches = speeches()?;
    let pool: Vec<String> = speeches.iter().flat_map(|(_, t)| sentences(t)).collect();
    let mut docs = synthetic(&speeches, bench.docs);
    let dir = tempfile::tempdir()?;
    let mut config = Config::default();
    config.storage.data_dir = dir.path().to_path_buf();
    config.drift.enabled = false;
    config.training.on_drift = false;
    config.subscriptions.max = bench.subscriptions.max(1);
    config.subscriptions.max_per_key = bench.subscriptions.max(1);
    config.subscriptions.restat_share = bench.restat;
    let app = twinflow_server::App::start(config)?;
    let loading = Instant::now();
    for batch in docs.chunks(100) {
        let lines: Vec<String> = batch.iter().map(|(id, text)| upsert(id, text)).collect();
        ingest(&app, &lines)?;
    }
    let load_s = loading.elapsed().as_secs_f64();
    let chunks = app.store.counts().1.get("chunks").copied().unwrap_or(0);
    eprintln!("loaded {} documents ({chunks} chunks) in {load_s:.1} s", docs.len());

    let mut rng = Rng(0x5eed_0f5u64);
    let round = |app: &twinflow_server::App, docs: &mut [(String, String)], rng: &mut Rng| {
        edit_round(app, docs, &pool, rng, bench.edits)
    };

    // A: no subscriptions.
    let mut baseline = Vec::new();
    for _ in 0..bench.rounds {
        baseline.push(round(&app, &mut docs, &mut rng)?.1 * 1e3);
    }

    // The subscriptions: a span of 4 to 10 words of a random sentence of a random document.
    let rss_before = rss_mib();
    let mut queries = Vec::with_capacity(bench.subscriptions);
    while queries.len() < bench.subscriptions {
        let doc = &docs[rng.below(docs.len())].1;
        let parts = sentences(doc);
        let words: Vec<&str> = parts[rng.below(parts.len())].split(' ').collect();
        let take = (4 + rng.below(7)).min(words.len());
        let start = rng.below(words.len() - take + 1);
        queries.push(words[start..start + take].join(" "));
    }
    let creating = Instant::now();
    let ids = Mutex::new(Vec::with_capacity(queries.len()));
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(query) = queries.get(i) else { return };
                    let new = NewSubscription {
                        query: query.clone(),
                        k: bench.k,
                        filter: SearchFilter::default(),
                        mode,
                        answer: false,
                        webhook: None,
                        owner: "bench".into(),
                    };
                    match app.primary().unwrap().subscriptions.create(new) {
                        Ok(created) => ids.lock().push(created.subscription.id),
                        Err(e) => eprintln!("subscription {i} refused: {e}"),
                    }
                }
            });
        }
    });
    let ids = ids.into_inner();
    anyhow::ensure!(ids.len() == bench.subscriptions, "{} of {} subscriptions made", ids.len(), bench.subscriptions);
    let create_s = creating.elapsed().as_secs_f64();
    let rss_after = rss_mib();
    eprintln!("{} subscriptions in {create_s:.1} s", ids.len());

    // Events as they arrive: (commit visible → received) in ms.
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let mut listener = app.primary().unwrap().subscriptions.listen();
    let received = latencies.clone();
    std::thread::spawn(move || {
        while let Ok(event) = listener.blocking_recv() {
            if event.committed_at_ms > 0 {
                received.lock().push((now_ms() - event.committed_at_ms) as f64);
            }
        }
    });

    // B: the same kind of rounds, followed.
    let mut commits = Vec::new();
    let (mut touched, mut searched, mut matched, mut rounds_ms, mut events) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut why = [0usize; 4];
    for _ in 0..bench.rounds {
        let before = app.primary().unwrap().subscriptions.stats();
        commits.push(round(&app, &mut docs, &mut rng)?.1 * 1e3);
        let after = app.primary().unwrap().subscriptions.stats();
        anyhow::ensure!(after.rounds == before.rounds + 1, "one round per commit expected: {before:?} → {after:?}");
        touched.push(after.last_touched as f64);
        searched.push(after.last_searched as f64);
        matched.push(after.last_match_ms);
        rounds_ms.push(after.last_round_ms);
        events.push((after.events - before.events) as f64);
        let (chunk, vector, words, statistics) = after.last_touches;
        for (total, n) in why.iter_mut().zip([chunk, vector, words, statistics]) {
            *total += n;
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let latencies = latencies.lock().clone();

    // Check: every subscription searched from scratch (its own query vector), as re-running them all
    // at a commit would.
    let checking = Instant::now();
    let mut wrong = 0;
    for id in &ids {
        let kept = app.primary().unwrap().subscriptions.get(id).context("a subscription vanished")?;
        let fresh = app.primary().unwrap().subscriptions.search_again(id)?.context("a subscription vanished")?;
        if fresh.iter().ne(kept.top.iter().map(|h| &h.chunk_id)) {
            wrong += 1;
        }
    }
    let rerun_all_ms = checking.elapsed().as_secs_f64() * 1e3;
    app.shutdown()?;

    let n = bench.rounds.max(1) as f64;
    let report = json!({
        "corpus": { "documents": bench.docs, "chunks": chunks, "load_s": load_s, "embedder": "all-MiniLM-L6-v2" },
        "subscriptions": ids.len(),
        "mode": bench.mode,
        "k": bench.k,
        "restat_share": bench.restat,
        "rounds": bench.rounds,
        "documents_edited_per_round": bench.edits,
        "create": { "seconds": create_s, "per_second": ids.len() as f64 / create_s,
                    "rss_mib_added": rss_after - rss_before },
        "commit_ms": {
            "without_subscriptions_p50": percentile(&baseline, 0.5),
            "with_subscriptions_p50": percentile(&commits, 0.5),
            "ratio_p50": percentile(&commits, 0.5) / percentile(&baseline, 0.5).max(1e-9),
            "without_subscriptions_p99": percentile(&baseline, 0.99),
            "with_subscriptions_p99": percentile(&commits, 0.99),
        },
        "per_commit": {
            "touched_mean": touched.iter().sum::<f64>() / n,
            "share_touched_mean": touched.iter().sum::<f64>() / n / ids.len().max(1) as f64,
            "searched_again_p50": percentile(&searched, 0.5),
            "searched_again_mean": searched.iter().sum::<f64>() / n,
            "searched_again_max": percentile(&searched, 1.0),
            "share_searched_mean": searched.iter().sum::<f64>() / n / ids.len().max(1) as f64,
            "touched_by": { "ranked_chunk": why[0] as f64 / n, "vector_floor": why[1] as f64 / n,
                            "bm25_bound": why[2] as f64 / n, "bm25_statistics": why[3] as f64 / n },
            "matching_ms_p50": percentile(&matched, 0.5),
            "matching_ms_p99": percentile(&matched, 0.99),
            "round_ms_p50": percentile(&rounds_ms, 0.5),
            "round_ms_p99": percentile(&rounds_ms, 0.99),
            "events_mean": events.iter().sum::<f64>() / n,
        },
        "event_latency_ms": {
            "events": latencies.len(),
            "p50": percentile(&latencies, 0.5),
            "p99": percentile(&latencies, 0.99),
        },
        "rerun_every_subscription_ms": rerun_all_ms,
        "rerun_over_round_p50": rerun_all_ms / percentile(&rounds_ms, 0.5).max(1e-9),
        "top_k_wrong_after_all_rounds": wrong,
    });
    Ok(report)
}
