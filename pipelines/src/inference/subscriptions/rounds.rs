//! One round of following: the notices merged while the last round ran,
//! the subscriptions they touch (`matcher.rs`), those searched again, and
//! an event for each whose top-k changed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use twinflow_schemas::Hash128;
use twinflow_schemas::api::{EventKind, SearchMode, SubscriptionEvent};
use twinflow_sinks::{CommitNotice, Ranked};

use super::{
    FLUSH_PER_ROUND, FLUSH_WHEN_IDLE, Mode, Rankings, Spec, Standing, Subscriptions, Touches, now_ms, ranked_top,
};
use crate::Failure;

impl Subscriptions {
    /// Searches as `spec` asks, exactly (so that the matcher's floors are
    /// those of the ranking), and what the matcher keeps of it.
    pub(super) fn search(&self, spec: &Spec, query: &[f32], changes: u64) -> Result<(Ranked, Standing), Failure> {
        let mode = match spec.asked.mode {
            Mode::Hybrid => (self.fusion)(),
            Mode::Vector => SearchMode::Vector,
            Mode::Bm25 => SearchMode::Bm25,
        };
        let failed = |e: twinflow_sinks::Error| Failure {
            what: format!("cannot search for subscription {}", spec.id),
            source: Box::new(e),
        };
        let ranked = self
            .store
            .search_ranked(&spec.asked.query, query, spec.asked.k, &spec.asked.filter, mode, true, true)
            .map_err(failed)?;
        let floor = |len: usize, last: Option<f32>, empty: f32| match last {
            Some(last) if len >= ranked.depth => last,
            _ => empty,
        };
        let vector_side = !matches!(mode, SearchMode::Bm25);
        let text_side = !matches!(mode, SearchMode::Vector);
        let mut chunks: Vec<Hash128> = ranked.hits.iter().map(|h| h.chunk_id).collect();
        chunks.extend(ranked.by_vector.iter().map(|(_, id)| *id));
        chunks.extend(ranked.by_bm25.iter().map(|(id, _)| *id));
        // A changed lead, or any chunk of its document, re-ranks the document's candidates.
        chunks.extend(ranked.documents_chunks.iter().copied());
        chunks.sort_unstable();
        chunks.dedup();
        let standing = Standing {
            vector: if vector_side { self.store.query_space(query) } else { Vec::new() },
            vector_floor: vector_side
                .then(|| floor(ranked.by_vector.len(), ranked.by_vector.last().map(|(s, _)| *s), f32::MIN)),
            bm25: if text_side { Some(self.store.bm25_query(&spec.asked.query).map_err(failed)?) } else { None },
            bm25_floor: text_side.then(|| floor(ranked.by_bm25.len(), ranked.by_bm25.last().map(|(_, s)| *s), 0.0)),
            chunks,
            changes_seen: changes,
            filtered: !spec.asked.filter.is_empty(),
            rankings: match mode {
                // The kept rankings settle deletions from the two lists alone: with leads, a search tells.
                SearchMode::Hybrid { vector_weight, bm25_weight, lead_weight, rrf_k } if lead_weight == 0.0 => {
                    Some(Rankings {
                        vector_weight,
                        bm25_weight,
                        rrf_k,
                        k: spec.asked.k,
                        vector: ranked.by_vector.iter().map(|(_, id)| *id).collect(),
                        vector_unknown: 0,
                        bm25: ranked.by_bm25.iter().map(|(id, _)| *id).collect(),
                        bm25_unknown: 0,
                        top: ranked.hits.iter().map(|h| h.chunk_id).collect(),
                    })
                }
                _ => None,
            },
        };
        Ok((ranked, standing))
    }

    /// Processes one (merged) notice: the subscriptions it can move are
    /// searched again; those whose top-k changed get an event.
    pub(super) fn round(&self, notice: CommitNotice) {
        let started = Instant::now();
        let mut guard = self.engine.lock();
        let engine = &mut *guard;
        engine.changes += notice.touched.len() as u64;
        let fusion = (self.fusion)();
        let everything = std::mem::take(&mut engine.stale)
            || notice.projection != engine.projection
            || engine.fusion.is_some_and(|f| f != fusion);
        engine.projection = notice.projection.clone();
        engine.fusion = Some(fusion);
        let (slots, touches) = if everything {
            (engine.matcher.all(), Touches::default())
        } else {
            let words: Vec<(HashMap<String, u32>, u32)> =
                notice.present.iter().map(|(_, text, _)| self.store.word_counts(text)).collect();
            let restat = (self.config.restat_share * notice.chunks.max(1) as f64) as u64;
            engine.matcher.touched(&notice, &words, engine.changes, restat)
        };
        let match_ms = started.elapsed().as_secs_f64() * 1e3;
        let touched_ids: HashSet<Hash128> = notice.touched.iter().copied().collect();
        let live: HashSet<Hash128> = notice.present.iter().map(|(id, _, _)| *id).collect();
        let removed: HashSet<Hash128> = touched_ids.difference(&live).copied().collect();
        let mut out = Vec::new();
        let mut answers = Vec::new();
        let mut searched = 0;
        for &(slot, hard) in &slots {
            let Some(id) = engine.by_slot.get(&slot).cloned() else { continue };
            let Some(sub) = engine.subs.get_mut(&id) else { continue };
            if sub.spec.asked.answer && sub.cited.iter().any(|c| touched_ids.contains(c)) {
                answers.push(id.clone());
            }
            // Only ranked chunks deleted: the kept rankings may settle it without a search.
            if !hard
                && let Some(standing) = engine.matcher.get(slot)
                && let Some(rankings) = standing.rankings.as_ref().and_then(|r| r.without(&removed))
            {
                let mut standing = standing.clone();
                standing.chunks.retain(|c| !removed.contains(c));
                standing.rankings = Some(rankings);
                engine.matcher.set(slot, standing);
                engine.dirty.insert(id);
                continue;
            }
            searched += 1;
            let (ranked, mut standing) = match self.search(&sub.spec, &sub.query, engine.changes) {
                Ok(found) => found,
                Err(e) => {
                    tracing::error!(subscription = %id, error = %crate::failure::error_chain(&e), "a subscription could not be searched; it is searched again at the next commit");
                    engine.stale = true;
                    continue;
                }
            };
            standing.chunks.extend(sub.cited.iter().copied());
            let top = ranked_top(&ranked.hits);
            let moved = top.iter().map(|h| h.chunk_id).ne(sub.top.iter().map(|h| h.chunk_id));
            if sub.spec.asked.answer && sub.cited.is_empty() && moved {
                answers.push(id.clone());
            }
            if moved {
                let before: HashSet<Hash128> = sub.top.iter().map(|h| h.chunk_id).collect();
                let after: HashSet<Hash128> = top.iter().map(|h| h.chunk_id).collect();
                let event = Arc::new(SubscriptionEvent {
                    subscription: id.clone(),
                    kind: EventKind::Changed,
                    epoch: ranked.epoch,
                    entered: top.iter().map(|h| h.chunk_id).filter(|c| !before.contains(c)).collect(),
                    left: sub.top.iter().map(|h| h.chunk_id).filter(|c| !after.contains(c)).collect(),
                    hits: ranked.hits,
                    answer: None,
                    at_ms: now_ms(),
                    committed_at_ms: notice.at_ms,
                });
                sub.epoch = event.epoch;
                self.record(sub, event.clone());
                out.push((event, sub.spec.asked.webhook.clone()));
            }
            sub.top = top;
            engine.matcher.set(slot, standing);
            // Saved with the next flushes: until then a restart searches everything again.
            engine.dirty.insert(id);
        }
        engine.stats.followed = engine.stats.followed.max(notice.epoch);
        self.flush(engine, FLUSH_PER_ROUND);
        let stats = &mut engine.stats;
        stats.rounds += 1;
        stats.searched += searched;
        stats.events += out.len() as u64;
        stats.last_touched = slots.len();
        stats.last_searched = searched as usize;
        stats.last_touches = (touches.by_chunk, touches.by_vector, touches.by_words, touches.by_statistics);
        stats.last_match_ms = match_ms;
        stats.last_round_ms = started.elapsed().as_secs_f64() * 1e3;
        metrics::histogram!("twinflow_subscription_round_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("twinflow_subscriptions_searched_total").increment(searched);
        drop(guard);
        for (event, webhook) in out {
            self.publish(event, webhook.as_ref());
        }
        for id in answers {
            self.queue_answer(&id);
        }
    }
}

/// The follower: notices merged while a round runs, one round per batch.
pub(super) fn follow(subscriptions: Weak<Subscriptions>, queue: crossbeam_channel::Receiver<CommitNotice>) {
    loop {
        let first = match queue.recv_timeout(Duration::from_secs(1)) {
            Ok(notice) => notice,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => match subscriptions.upgrade() {
                Some(subscriptions) => {
                    subscriptions.save_some(FLUSH_WHEN_IDLE);
                    continue;
                }
                None => return,
            },
            Err(_) => return,
        };
        let Some(subscriptions) = subscriptions.upgrade() else { return };
        let mut merged = first;
        for next in queue.try_iter() {
            merged = merge(merged, next);
        }
        subscriptions.round(merged);
    }
}

/// Two notices as one: everything either touched, at the later epoch.
fn merge(mut earlier: CommitNotice, later: CommitNotice) -> CommitNotice {
    let replaced: HashSet<Hash128> = later.present.iter().map(|(id, _, _)| *id).collect();
    earlier.present.retain(|(id, _, _)| !replaced.contains(id));
    earlier.present.extend(later.present);
    earlier.touched.extend(later.touched);
    earlier.touched.sort_unstable();
    earlier.touched.dedup();
    CommitNotice { touched: earlier.touched, present: earlier.present, ..later }
}
