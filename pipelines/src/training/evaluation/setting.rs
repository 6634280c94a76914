//! Retrieval settings as versions. `twinflow eval retrieval --tune
//! --promote` chooses a hybrid fusion on a dev half of a question set's
//! queries and judges it on the other half against the active setting; the
//! choice is registered with its evidence (a registry of cards, as models
//! are), and becomes active only when its paired gain in nDCG@10 is above
//! zero with 95% confidence. The server and the `eval` commands search with
//! the active version's weights in place of `[search]`'s; a running server
//! follows the registry ([`RetrievalSettings`]): a version promoted or
//! rolled back over HTTP applies at once, one promoted by another process
//! (the `eval` command) within [`FOLLOW_EVERY`].
//!
//! ```text
//!  tuned fusion (dev half) ─▶ held-out half: candidate − active, per query ─▶ bootstrap interval
//!     ─▶ card (weights, set, gain) registered ─▶ low > 0: promoted ─▶ the next search uses its weights
//! ```

use std::path::PathBuf;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use twinflow_models::Registry;
use twinflow_schemas::api::SearchMode;
use twinflow_schemas::config::{Config, Fusion};
use twinflow_schemas::models::{DatasetRef, RegistryEvent};
use twinflow_schemas::training::Switched;

pub use twinflow_schemas::models::RetrievalCard;

use super::measures::paired_difference;
use super::retrieval::{RetrievalReport, SettingReport};
use crate::training::{Error, Promotion, version_name};

/// How often a server reads the registry for a version another process promoted.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(2);

/// The name of the configured hybrid among a report's settings.
pub const CONFIGURED: &str = "hybrid (configured)";
/// Seed of the paired bootstrap.
const SEED: u64 = 41;

/// Where retrieval settings are registered: `<data>/_models/retrieval`.
pub fn registry_dir(config: &Config) -> PathBuf {
    config.storage.data_dir.join("_models").join("retrieval")
}

fn registry(config: &Config) -> Result<Registry<RetrievalCard>, Error> {
    Ok(Registry::<RetrievalCard>::open(&registry_dir(config))?)
}

fn fusion_of(card: &RetrievalCard) -> Fusion {
    Fusion {
        vector_weight: card.vector_weight,
        bm25_weight: card.bm25_weight,
        lead_weight: card.lead_weight,
        rrf_k: card.rrf_k,
    }
}

/// Puts the active retrieval setting's weights (if a version is active) in
/// `config.search`; returns its version.
pub fn apply_active(config: &mut Config) -> Result<Option<u64>, Error> {
    if !registry_dir(config).exists() {
        return Ok(None);
    }
    let (version, fusion) = RetrievalSettings::open(config)?.current();
    config.search.vector_weight = fusion.vector_weight;
    config.search.bm25_weight = fusion.bm25_weight;
    config.search.lead_weight = fusion.lead_weight;
    config.search.rrf_k = fusion.rrf_k;
    Ok(version)
}

/// The fusion a running server searches with: the active registered
/// setting's weights, else `[search]`'s. Reading it is a lock and a copy;
/// [`RetrievalSettings::refresh`] reads the registry.
#[derive(Debug)]
pub struct RetrievalSettings {
    registry: Registry<RetrievalCard>,
    configured: Fusion,
    active: RwLock<(Option<u64>, Fusion)>,
    /// One refresh at a time, so an older read never overwrites a newer one.
    refreshing: Mutex<()>,
}

impl RetrievalSettings {
    /// Opens (creating) `<data>/_models/retrieval` and applies its active version.
    pub fn open(config: &Config) -> Result<Self, Error> {
        let configured = config.search.fusion();
        let settings = Self {
            registry: registry(config)?,
            configured,
            active: RwLock::new((None, configured)),
            refreshing: Mutex::new(()),
        };
        settings.refresh()?;
        Ok(settings)
    }

    /// The active version (`None`: `[search]`'s weights) and its fusion.
    pub fn current(&self) -> (Option<u64>, Fusion) {
        *self.active.read()
    }

    /// A version's name (`retrieval-v<N>`), or `base` for `[search]`'s weights.
    pub fn name(version: Option<u64>) -> String {
        version_name("retrieval", version)
    }

    /// The active version's name.
    pub fn active_name(&self) -> String {
        Self::name(self.current().0)
    }

    /// The fusion hybrid searches run with now.
    pub fn fusion(&self) -> Fusion {
        self.current().1
    }

    /// `[search]`'s own weights.
    pub fn configured(&self) -> Fusion {
        self.configured
    }

    /// Every registered setting, oldest first, and the registry's events.
    pub fn versions(&self) -> Result<(Vec<RetrievalCard>, Vec<RegistryEvent>), Error> {
        Ok((self.registry.list()?, self.registry.events()?))
    }

    /// Reads the registry's active version and switches to it; true when it changed.
    pub fn refresh(&self) -> Result<bool, Error> {
        let _one = self.refreshing.lock();
        let version = self.registry.active()?;
        if version == self.current().0 {
            return Ok(false);
        }
        let fusion = match version {
            Some(v) => fusion_of(&self.registry.card(v)?),
            None => self.configured,
        };
        *self.active.write() = (version, fusion);
        tracing::info!(
            version = Self::name(version),
            vector_weight = fusion.vector_weight,
            bm25_weight = fusion.bm25_weight,
            lead_weight = fusion.lead_weight,
            rrf_k = fusion.rrf_k,
            "hybrid search switched its fusion"
        );
        Ok(true)
    }

    fn switched(&self) -> Result<Switched, Error> {
        self.refresh()?;
        Ok(Switched { active: self.active_name(), switched_at_epoch: None, answering: None })
    }
}

impl Promotion for RetrievalSettings {
    fn kind(&self) -> &'static str {
        "retrieval setting"
    }

    /// Settings are judged by `twinflow eval retrieval`, not trained here.
    fn is_running(&self) -> bool {
        false
    }

    fn has_version(&self, version: u64) -> bool {
        self.registry.card(version).is_ok()
    }

    fn ever_promoted(&self) -> Result<bool, Error> {
        Ok(self.registry.events()?.iter().any(|e| e.action == "promote"))
    }

    fn promote(&self, version: u64, reason: &str) -> Result<Switched, Error> {
        self.registry.promote(version, reason)?;
        self.switched()
    }

    fn roll_back(&self) -> Result<Switched, Error> {
        self.registry.rollback("rolled back by request")?;
        self.switched()
    }
}

/// Judges the fusion `report` tuned against the configured hybrid (the
/// active setting) on the held-out half, registers it, and promotes it when
/// the gain's interval is above zero. `None` when the report was not tuned
/// or the dev half chose the active setting itself.
pub fn judge_and_register(
    config: &Config,
    report: &RetrievalReport,
    active: Option<u64>,
) -> Result<Option<RetrievalCard>, Error> {
    let Some(tuned) = &report.tuned else { return Ok(None) };
    let on_test = |name: &str| -> Result<&SettingReport, Error> {
        tuned
            .test
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| Error::Config(format!("the report has no setting {name:?}")))
    };
    let candidate = on_test(&tuned.best.name)?;
    let current = on_test(CONFIGURED)?;
    let Some(SearchMode::Hybrid { vector_weight, bm25_weight, lead_weight, rrf_k }) = candidate.mode else {
        return Err(Error::Config(format!("{} is not a hybrid setting", candidate.name)));
    };
    if candidate.name == CONFIGURED || candidate.mode == current.mode {
        return Ok(None);
    }
    let gain = paired_difference(&candidate.per_query, &current.per_query, SEED);
    let promoted = gain.low > 0.0;
    let decision = if promoted {
        format!(
            "promoted: nDCG@10 {:.3} against {:.3} on {} held-out queries of {}, gain {gain}",
            candidate.ndcg_at_10.mean, current.ndcg_at_10.mean, tuned.test_queries, report.set
        )
    } else {
        format!(
            "kept the active setting: gain {gain} on {} held-out queries of {} is not above the noise",
            tuned.test_queries, report.set
        )
    };
    let card = RetrievalCard {
        version: 0,
        created_at_ms: twinflow_schemas::clock::now_ms(),
        vector_weight,
        bm25_weight,
        lead_weight,
        rrf_k,
        test_queries: tuned.test_queries,
        dev_queries: tuned.dev_queries,
        ndcg_at_10: candidate.ndcg_at_10,
        active_ndcg_at_10: current.ndcg_at_10,
        gain,
        parent: active,
        promoted,
        decision,
        dataset: DatasetRef {
            name: report.set.clone(),
            version: 0,
            epoch: report.epoch,
            content_hash: String::new(),
            train_pairs: tuned.dev_queries,
            test_pairs: tuned.test_queries,
        },
    };
    let registry = registry(config)?;
    let card = registry.register(card, |_| Ok(()), &[])?;
    if promoted {
        registry.promote(card.version, &card.decision)?;
    }
    Ok(Some(card))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::evaluation::retrieval::Tuned;
    use twinflow_schemas::stats::estimate;

    fn setting(name: &str, bm25_weight: f32, per_query: Vec<f64>) -> SettingReport {
        let e = estimate(&per_query, 1);
        SettingReport {
            name: name.to_owned(),
            mode: Some(SearchMode::Hybrid { vector_weight: 1.0, bm25_weight, lead_weight: 0.0, rrf_k: 10.0 }),
            ndcg_at_10: e,
            recall_at_10: e,
            mrr_at_10: e,
            per_query,
        }
    }

    /// A tuned report whose held-out half scores the configured fusion at
    /// `configured` and the dev half's choice (BM25 weight 0.2) at `chosen`.
    fn report(configured: Vec<f64>, chosen: Vec<f64>) -> RetrievalReport {
        let test = vec![setting(CONFIGURED, 0.5, configured), setting("hybrid(bm25=0.2)", 0.2, chosen)];
        RetrievalReport {
            set: "faq".into(),
            documents: 10,
            queries: 2 * test[0].per_query.len(),
            epoch: 3,
            embedder: "test".into(),
            settings: Vec::new(),
            tuned: Some(Tuned {
                dev_queries: test[0].per_query.len(),
                test_queries: test[0].per_query.len(),
                best: test[1].clone(),
                dev: test.clone(),
                test,
                gains: Vec::new(),
            }),
        }
    }

    #[test]
    fn a_fusion_is_active_only_after_a_gain_above_the_noise() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.storage.data_dir = dir.path().to_owned();
        assert_eq!(apply_active(&mut config).unwrap(), None, "no registry: [search] as configured");

        // Better on some held-out queries, worse on others: registered, not active.
        let noisy = report(vec![0.5, 0.9, 0.2, 0.8], vec![0.9, 0.5, 0.6, 0.4]);
        let card = judge_and_register(&config, &noisy, None).unwrap().expect("a card");
        assert!(!card.promoted && card.gain.low <= 0.0, "{card:?}");
        assert!(card.decision.starts_with("kept the active setting"), "{}", card.decision);
        assert_eq!(apply_active(&mut config).unwrap(), None);
        assert_eq!(config.search.fusion(), twinflow_schemas::config::SearchConfig::default().fusion());

        // Better on every held-out query: registered and active, with its evidence.
        let better = report(vec![0.2, 0.3, 0.4, 0.5, 0.3, 0.2], vec![0.6, 0.7, 0.8, 0.9, 0.7, 0.6]);
        let card = judge_and_register(&config, &better, None).unwrap().expect("a card");
        assert!(card.promoted && card.gain.low > 0.0, "{card:?}");
        assert_eq!((card.version, card.dataset.name.as_str(), card.dataset.epoch), (2, "faq", 3));
        assert_eq!(apply_active(&mut config).unwrap(), Some(2));
        assert_eq!((config.search.bm25_weight, config.search.lead_weight, config.search.rrf_k), (0.2, 0.0, 10.0));

        // The dev half chose the active setting itself: nothing to register.
        let mut same = report(vec![0.5; 4], vec![0.5; 4]);
        let tuned = same.tuned.as_mut().unwrap();
        tuned.best = tuned.test[0].clone();
        assert!(judge_and_register(&config, &same, Some(2)).unwrap().is_none());
    }
}
