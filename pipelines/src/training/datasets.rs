//! Datasets: instructions written by an LLM for the author's extracts
//! (cached, incremental), preference triples, and curated versioned
//! snapshots with lineage.
//!
//! For each extract the model writes questions the extract answers (the
//! samples are question → the author's extract), and its own answer to the
//! first question without seeing the extract (the rejected side of a
//! preference triple whose chosen side is the author's text).
//!
//! ```text
//!  live chunks (extracts) ─ not cached for (extract hash, generator, prompt version)? ─▶ Generator ─▶ questions, answer ─▶ cache (JSONL)
//!  snapshot: store snapshot (epoch E)
//!     offline samples (instruct table) + LLM questions of live extracts (cache)
//!     ─▶ quality filter ─▶ MinHash near-duplicate removal (whole dataset) ─▶ split by document
//!     ─▶ preference triples (prompt = instruction, chosen = the author's extract, rejected = the model's answer)
//!     ─▶ datasets/instruct/v<N>/ (Parquet, chat JSONL, DPO JSONL, manifest with lineage)
//!     ─▶ retention: versions past the newest `keep` go, unless pinned or a registered model was trained on them;
//!        the store keeps the table snapshots the remaining versions were taken from
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use twinflow_dataflow::text::dataset::{
    MinHasher, PROMPT_VERSION, Rejection, chat_line, parse_questions, preference_line, quality, question_prompt,
};
use twinflow_dataflow::text::instruct::MIN_CHARS;
use twinflow_dataflow::text::split_for;
use twinflow_models::{Card, ChatMessage, GenerateParams, Generator, Registry};
use twinflow_schemas::{DocumentKind, Hash128, InstructRow, Split};
use twinflow_sinks::Store;
use twinflow_sinks::datasets::{PreferenceRow, read_manifest, remove_version, versions, write_instruct_version};

use super::Error;
use crate::Context;

/// Whether a sample may judge a model: an LLM wrote its question (never a
/// template: templated instructions may train a model, never judge one)
/// about a held-out document (split by document, so no chunk of it trained).
pub fn is_evidence(row: &InstructRow) -> bool {
    row.split == Split::Test && row.generator.starts_with(LLM_GENERATOR_PREFIX)
}

/// [`is_evidence`] for a preference triple: its question was written by an
/// LLM about a held-out document.
pub fn is_evidence_preference(row: &PreferenceRow) -> bool {
    row.split == Split::Test.as_str() && row.generator.starts_with(LLM_GENERATOR_PREFIX)
}

/// How a snapshot names the generator of an LLM-written sample: `llm:<model>@p<prompt version>`.
const LLM_GENERATOR_PREFIX: &str = "llm:";

/// Questions asked for per extract.
const QUESTIONS_PER_EXTRACT: usize = 3;
/// Jaccard similarity of word 3-shingles above which two samples are duplicates.
const DUPLICATE_JACCARD: f64 = 0.7;

/// One cached generation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CachedGeneration {
    /// The extract's content hash (its chunk id).
    pub extract: String,
    pub generator: String,
    pub prompt_version: u32,
    /// Questions the extract answers.
    pub questions: Vec<String>,
    /// The model's own answer to the first question, without the extract.
    pub answer: Option<String>,
    pub seconds: f64,
}

/// What a generation pass did, what a snapshot wrote and its manifest: plain types of `schemas` (the API shows them).
pub use twinflow_schemas::datasets::{DatasetLineage, DatasetManifest, DatasetVersion, GenerationReport};

/// Which dataset versions stay after each new one: the newest `keep` (0:
/// all), the `pinned`, and every version a model still in a registry was
/// trained on ([`Lineage`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatasetRetention {
    pub keep: usize,
    pub pinned: Vec<u64>,
}

/// What names dataset versions as its models' lineage: a model registry.
pub trait Lineage: Send + Sync + std::fmt::Debug {
    /// The versions of dataset `name` that the models here were trained on.
    fn trained_on(&self, name: &str) -> Result<BTreeSet<u64>, Error>;
}

impl<C: Card + std::fmt::Debug + Send + Sync> Lineage for Registry<C> {
    fn trained_on(&self, name: &str) -> Result<BTreeSet<u64>, Error> {
        Ok(self.list()?.iter().map(Card::dataset).filter(|d| d.name == name).map(|d| d.version).collect())
    }
}

/// The generation cache and the dataset versions of one data directory.
#[derive(Debug)]
pub struct Datasets {
    cache_file: PathBuf,
    cache: Mutex<HashMap<(String, String, u32), CachedGeneration>>,
    /// Serialises snapshots (version numbers).
    writer: Mutex<()>,
    /// Serialises generation passes (a pass does not hold up snapshots).
    generating: Mutex<()>,
    retention: DatasetRetention,
    /// The registries whose models' datasets are kept.
    lineage: Mutex<Vec<Box<dyn Lineage>>>,
}

impl Datasets {
    /// Opens the cache under `<data>/datasets/_cache/` (a damaged line is skipped and logged).
    pub fn open(store: &Store) -> Result<Datasets, Error> {
        let cache_file = store.data_dir().join("datasets").join("_cache").join("generations.jsonl");
        let mut cache = HashMap::new();
        if let Ok(text) = std::fs::read_to_string(&cache_file) {
            for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                match serde_json::from_str::<CachedGeneration>(line) {
                    Ok(g) => {
                        cache.insert((g.extract.clone(), g.generator.clone(), g.prompt_version), g);
                    }
                    Err(e) => {
                        tracing::warn!(file = %cache_file.display(), line = n + 1, error = %e, "skipping a damaged cached generation")
                    }
                }
            }
        }
        Ok(Datasets {
            cache_file,
            cache: Mutex::new(cache),
            writer: Mutex::new(()),
            generating: Mutex::new(()),
            retention: DatasetRetention::default(),
            lineage: Mutex::default(),
        })
    }

    /// These datasets, removing after each new version the versions
    /// `retention` does not keep.
    pub fn with_retention(mut self, retention: DatasetRetention) -> Self {
        self.retention = retention;
        self
    }

    /// Keeps every dataset version the models of `registry` were trained on.
    pub fn keep_lineage_of(&self, registry: Box<dyn Lineage>) {
        self.lineage.lock().push(registry);
    }

    /// Removes the versions of `instruct` past the newest `keep` that are
    /// neither pinned nor in a registered model's lineage, and has `store`
    /// hold the table snapshots the remaining ones were taken from; returns
    /// the removed versions. Called with the writer lock held.
    fn prune(&self, store: &Store) -> Result<Vec<u64>, Error> {
        let all = versions(store.data_dir(), "instruct");
        let mut needed: BTreeSet<u64> = self.retention.pinned.iter().copied().collect();
        for registry in self.lineage.lock().iter() {
            needed.extend(registry.trained_on("instruct")?);
        }
        let keep = if self.retention.keep == 0 { all.len() } else { self.retention.keep };
        let removed: Vec<u64> = all.iter().rev().skip(keep).filter(|v| !needed.contains(v)).copied().collect();
        for version in &removed {
            remove_version(store.data_dir(), "instruct", *version)?;
            tracing::info!(version, "removed an old dataset version (storage.keep_datasets)");
        }
        let mut snapshots = Vec::new();
        for version in all.iter().filter(|v| !removed.contains(v)) {
            let manifest = read_manifest(store.data_dir(), "instruct", *version)?;
            snapshots.extend(manifest.get("tables_snapshot").and_then(serde_json::Value::as_u64));
        }
        store.hold_snapshots(snapshots);
        Ok(removed)
    }

    /// Generations cached so far.
    pub fn cached(&self) -> usize {
        self.cache.lock().len()
    }

    fn append(&self, generation: &CachedGeneration) -> std::io::Result<()> {
        if let Some(dir) = self.cache_file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.cache_file)?;
        writeln!(file, "{}", serde_json::to_string(generation)?)?;
        file.sync_data()
    }

    /// Sends up to `limit` live extracts that `generator` has not yet seen
    /// (with this prompt version) to it, and caches the questions it writes.
    pub fn generate(&self, store: &Store, generator: &dyn Generator, limit: usize) -> Result<GenerationReport, Error> {
        self.generate_for(store, generator, limit, None)
    }

    /// [`Self::generate`], taking the extracts of `first`-split documents
    /// before the others, and one extract of each document in turn (so a
    /// small `limit` still covers many documents). A training run asks for
    /// [`Split::Test`] first: questions about held-out documents are the
    /// evidence it is judged on.
    pub fn generate_for(
        &self,
        store: &Store,
        generator: &dyn Generator,
        limit: usize,
        first: Option<Split>,
    ) -> Result<GenerationReport, Error> {
        let _pass = self.generating.lock();
        let started = Instant::now();
        let name = generator.model_name().to_owned();
        let extracts = spread(extracts(store), first);
        let mut report = GenerationReport { generator: name.clone(), extracts: extracts.len(), ..Default::default() };
        let todo: Vec<_> = {
            let cache = self.cache.lock();
            extracts
                .into_iter()
                .filter(|(id, _)| {
                    let hit = cache.contains_key(&(id.to_hex(), name.clone(), PROMPT_VERSION));
                    report.cached += usize::from(hit);
                    !hit
                })
                .collect()
        };
        report.remaining = todo.len().saturating_sub(limit);
        for (id, text) in todo.into_iter().take(limit) {
            let t = Instant::now();
            match ask(generator, &text, id.low64()) {
                Ok((questions, answer)) => {
                    report.generated += 1;
                    report.questions += questions.len();
                    let cached = CachedGeneration {
                        extract: id.to_hex(),
                        generator: name.clone(),
                        prompt_version: PROMPT_VERSION,
                        questions,
                        answer,
                        seconds: t.elapsed().as_secs_f64(),
                    };
                    self.append(&cached).context("writing the generation cache")?;
                    self.cache.lock().insert((cached.extract.clone(), name.clone(), PROMPT_VERSION), cached);
                }
                Err(e) => {
                    report.failures += 1;
                    tracing::warn!(extract = %id.to_hex(), error = %e, "generation failed; the extract is retried next pass");
                }
            }
        }
        report.seconds = started.elapsed().as_secs_f64();
        tracing::info!(?report, "instruct generation pass");
        Ok(report)
    }

    /// Writes the next version of the instruct dataset from the live state
    /// (taking a store snapshot of every table first).
    pub fn snapshot(&self, store: &Store) -> Result<DatasetVersion, Error> {
        let _writer = self.writer.lock();
        let tables = store.snapshot().context("the table snapshot failed")?;
        // One committed epoch for everything the version is made of (the table snapshot may be older).
        let (epoch, offline, chunks) = store.current_instruct_and_chunks();
        // The LLM samples of every live extract, from whichever generator wrote them (newest prompt first).
        let mut llm: Vec<(InstructRow, Option<String>)> = Vec::new();
        {
            let cache = self.cache.lock();
            let mut by_extract: HashMap<String, Vec<&CachedGeneration>> = HashMap::new();
            for g in cache.values() {
                by_extract.entry(g.extract.clone()).or_default().push(g);
            }
            let mut seen = BTreeSet::new();
            for chunk in &chunks {
                let hex = chunk.chunk_id.to_hex();
                if !seen.insert((chunk.doc_id.clone(), hex.clone())) {
                    continue;
                }
                let Some(gens) = by_extract.get_mut(&hex) else { continue };
                gens.sort_by(|a, b| (b.prompt_version, &b.generator).cmp(&(a.prompt_version, &a.generator)));
                let g = gens[0];
                for (i, question) in g.questions.iter().enumerate() {
                    let row = InstructRow {
                        sample_id: Hash128::of_parts(&[
                            question.as_bytes(),
                            chunk.text.as_bytes(),
                            chunk.doc_id.as_bytes(),
                        ]),
                        instruction: question.clone(),
                        output: chunk.text.clone(),
                        doc_id: chunk.doc_id.clone(),
                        chunk_ids: vec![chunk.chunk_id],
                        generator: format!("{LLM_GENERATOR_PREFIX}{}@p{}", g.generator, g.prompt_version),
                        split: split_for(&chunk.doc_id),
                    };
                    llm.push((row, if i == 0 { g.answer.clone() } else { None }));
                }
            }
        }
        let candidates: Vec<(InstructRow, Option<String>)> =
            offline.into_iter().map(|r| (r, None)).chain(llm).collect();
        let total = candidates.len();
        let mut rejected: BTreeMap<Rejection, usize> = BTreeMap::new();
        let passed: Vec<_> = candidates
            .into_iter()
            .filter(|(row, _)| match quality(&row.instruction, &row.output) {
                None => true,
                Some(reason) => {
                    *rejected.entry(reason).or_default() += 1;
                    false
                }
            })
            .collect();
        let pairs: Vec<(&str, &str)> =
            passed.iter().map(|(r, _)| (r.instruction.as_str(), r.output.as_str())).collect();
        let keep = MinHasher::default().dedupe_pairs(&pairs, DUPLICATE_JACCARD);
        let duplicates = passed.len() - keep.len();
        let mut kept: Vec<(InstructRow, Option<String>)> = Vec::with_capacity(keep.len());
        let mut passed: Vec<Option<_>> = passed.into_iter().map(Some).collect();
        for i in keep {
            if let Some(item) = passed[i].take() {
                kept.push(item);
            }
        }

        let preference: Vec<PreferenceRow> = kept
            .iter()
            .filter_map(|(row, rejected)| {
                let rejected = rejected.as_ref().filter(|r| !r.trim().is_empty())?;
                Some(PreferenceRow {
                    prompt: row.instruction.clone(),
                    chosen: row.output.clone(),
                    rejected: rejected.clone(),
                    doc_id: row.doc_id.clone(),
                    chunk_id: row.chunk_ids.first().map(Hash128::to_hex).unwrap_or_default(),
                    generator: row.generator.clone(),
                    split: row.split.as_str().to_owned(),
                })
            })
            .collect();
        let samples: Vec<InstructRow> = kept.into_iter().map(|(r, _)| r).collect();
        let mut generators: BTreeMap<String, usize> = BTreeMap::new();
        for row in &samples {
            *generators.entry(row.generator.clone()).or_default() += 1;
        }
        let (train, test) = (
            samples.iter().filter(|r| r.split == Split::Train).count(),
            samples.iter().filter(|r| r.split == Split::Test).count(),
        );
        let mut ids: Vec<u128> = samples.iter().map(|r| r.sample_id.0).collect();
        ids.sort_unstable();
        let content_hash = Hash128::of(&ids.iter().flat_map(|i| i.to_be_bytes()).collect::<Vec<u8>>()).to_hex();
        let docs: BTreeSet<&str> = samples.iter().map(|r| r.doc_id.as_str()).collect();

        let line = |rows: &mut dyn Iterator<Item = &InstructRow>| {
            rows.map(|r| chat_line(&r.instruction, &r.output) + "\n").collect::<String>()
        };
        let train_jsonl = line(&mut samples.iter().filter(|r| r.split == Split::Train));
        let test_jsonl = line(&mut samples.iter().filter(|r| r.split == Split::Test));
        let preference_jsonl: String =
            preference.iter().map(|p| preference_line(&p.prompt, &p.chosen, &p.rejected) + "\n").collect();
        let data_dir = store.data_dir();
        let version = versions(data_dir, "instruct").last().copied().unwrap_or(0) + 1;
        let mut info = DatasetVersion {
            name: "instruct".into(),
            version,
            source_epoch: epoch,
            tables_snapshot: tables.version,
            tables_snapshot_epoch: tables.epoch,
            documents: docs.len(),
            generators,
            candidates: total,
            rejected,
            duplicates,
            train,
            test,
            preference: preference.len(),
            content_hash,
            files: Vec::new(),
        };
        let manifest = DatasetManifest {
            version: info.clone(),
            created_at_ms: crate::now_ms(),
            lineage: DatasetLineage {
                source_epoch: epoch,
                tables_snapshot: tables.version,
                documents: docs.into_iter().map(str::to_owned).collect(),
                prompt_version: PROMPT_VERSION,
                duplicate_jaccard: DUPLICATE_JACCARD,
            },
        };
        let manifest = serde_json::to_value(&manifest).context("encoding the dataset manifest")?;
        let jsonl = [("train.jsonl", train_jsonl), ("test.jsonl", test_jsonl), ("preference.jsonl", preference_jsonl)];
        info.files = write_instruct_version(data_dir, version, &samples, &preference, &jsonl, &manifest)?;
        self.prune(store)?;
        tracing::info!(
            version,
            epoch,
            train,
            test,
            duplicates,
            preference = info.preference,
            "dataset version written"
        );
        Ok(info)
    }
}

/// Asks `generator` for questions `extract` answers, then for its own
/// answer to the first of them (without the extract).
fn ask(generator: &dyn Generator, extract: &str, seed: u64) -> Result<(Vec<String>, Option<String>), Error> {
    let (system, user) = question_prompt(extract, QUESTIONS_PER_EXTRACT);
    let messages = [ChatMessage::new("system", &system), ChatMessage::new("user", &user)];
    let params = GenerateParams {
        max_tokens: 40 * QUESTIONS_PER_EXTRACT,
        temperature: 0.7,
        top_p: 0.9,
        seed,
        repetition_penalty: 1.1,
        ..GenerateParams::default()
    };
    let reply = generator.generate(&messages, &params, &mut |_| ControlFlow::Continue(()))?;
    let questions = parse_questions(&reply.text);
    if questions.is_empty() {
        tracing::debug!(reply = %reply.text, "no questions in the reply");
        return Ok((questions, None));
    }
    let params = GenerateParams { max_tokens: 200, ..params };
    let answer =
        generator.generate(&[ChatMessage::new("user", &questions[0])], &params, &mut |_| ControlFlow::Continue(()))?;
    Ok((questions, Some(answer.text.trim().to_owned())))
}

/// `extracts` reordered: those of `first`-split documents first, then round
/// robin over documents (each document's first extract, then each one's
/// second, ...), documents in id order.
fn spread(extracts: Vec<(Hash128, String, String)>, first: Option<Split>) -> Vec<(Hash128, String)> {
    let mut by_doc: BTreeMap<String, Vec<(Hash128, String)>> = BTreeMap::new();
    for (id, text, doc_id) in extracts {
        by_doc.entry(doc_id).or_default().push((id, text));
    }
    let mut ranked: Vec<(bool, usize, String, Hash128, String)> = Vec::new();
    for (doc_id, extracts) in by_doc {
        let later = first.is_some_and(|split| split_for(&doc_id) != split);
        for (turn, (id, text)) in extracts.into_iter().enumerate() {
            ranked.push((later, turn, doc_id.clone(), id, text));
        }
    }
    ranked.sort_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
    ranked.into_iter().map(|(_, _, _, id, text)| (id, text)).collect()
}

/// The live extracts an LLM may write questions for: distinct chunks of at
/// least [`MIN_CHARS`] characters from articles and posts (not code), with
/// their document, in the store's chunk order.
fn extracts(store: &Store) -> Vec<(Hash128, String, String)> {
    let kinds: HashMap<String, DocumentKind> =
        store.current_documents().into_iter().map(|d| (d.doc_id, d.kind)).collect();
    let mut seen = BTreeSet::new();
    store
        .current_chunks()
        .into_iter()
        .filter(|c| kinds.get(&c.doc_id).is_some_and(|k| *k != DocumentKind::Repository))
        .filter(|c| c.text.chars().count() >= MIN_CHARS)
        .filter(|c| seen.insert(c.chunk_id))
        .map(|c| (c.chunk_id, c.text, c.doc_id))
        .collect()
}
