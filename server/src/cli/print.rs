//! Tables for people: the drift monitor, the model versions, the sources.

use twinflow_schemas::api::{DriftResponse, ModelsResponse};

use crate::ui::paint;

/// A value for people: the number, or `null` as JSON writes it.
fn or_null<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or("null".to_owned(), |v| v.to_string())
}

/// `twinflow drift`: the state, then the latest rows as a table.
pub(super) fn print_drift(drift: &DriftResponse) {
    let Some(state) = &drift.state else {
        println!("drift monitoring is off ([drift] enabled = false)");
        return;
    };
    println!(
        "epoch {}  reference {} ({} chunks, epoch {})  window {} chunks from epoch {}  new since reference {}",
        state.epoch,
        state.reference.as_deref().map_or("null".to_owned(), |r| format!("{r:?}")),
        state.reference_size,
        or_null(state.reference_epoch),
        state.window_size,
        state.window_start,
        state.new_samples
    );
    let values = state.metrics.as_ref().map(|m| m.named());
    for (i, (metric, threshold)) in state.thresholds.named().into_iter().enumerate() {
        let value = values.map(|v| v[i].1);
        let over = value.is_some_and(|v| threshold > 0.0 && v >= threshold);
        println!(
            "  {metric:<10} {:>9}  threshold {threshold:<6} {}",
            value.map_or("-".to_owned(), |v| format!("{v:.4}")),
            if over { paint::bad("OVER") } else { paint::dim("") }
        );
    }
    println!(
        "  trigger {}  ({} so far; last: {})",
        if state.armed {
            "armed"
        } else {
            "disarmed until drift falls below threshold × hysteresis or min_samples more chunks arrive"
        },
        state.triggers,
        state.last_trigger.as_ref().map_or("never".to_owned(), |t| format!("epoch {}", t.epoch))
    );
    if !drift.recent.is_empty() {
        println!("\n  epoch  window_start  window_size  metric      value     threshold  triggered");
        for row in &drift.recent {
            println!(
                "  {:<6} {:<13} {:<12} {:<11} {:<9.4} {:<10} {}",
                row.epoch,
                row.window_start,
                row.window_size,
                row.metric,
                row.value,
                row.threshold,
                if row.triggered { paint::bad("true") } else { paint::dim("false") }
            );
        }
    }
}

/// `twinflow models list`.
pub(super) fn print_models(models: &ModelsResponse) {
    println!("active: {}   base model: {:?}", paint::good(&models.active), models.base_model);
    if models.versions.is_empty() {
        println!("no model versions yet (`twinflow train`, or drift triggers one)");
    }
    for card in &models.versions {
        let (d, e) = (&card.dataset, &card.evaluation);
        println!(
            "  {} dataset instruct v{} (epoch {}, {} train / {} test pairs)  recall@{}: base {:.4}, parent {:.4}, candidate {:.4}  {}",
            paint::id(format_args!("v{:<3}", card.version)),
            d.version,
            d.epoch,
            d.train_pairs,
            d.test_pairs,
            e.k,
            e.base,
            e.parent,
            e.candidate,
            card.decision
        );
    }
    let training = &models.training;
    if training.state == "running" {
        println!("training: {:?} step {}/{}", training.phase, training.step, training.steps);
    }
}

/// `twinflow sources`: one line per source, then its last refused record.
pub(super) fn print_sources(sources: &twinflow_schemas::api::SourcesResponse) {
    if sources.sources.is_empty() {
        println!("no sources are running (HTTP ingest only)");
        return;
    }
    println!(
        "{:<16} {:<8} {:<9} {:>9} {:>9} {:>7} {:>12}  position",
        "name", "kind", "state", "changes", "per s", "errors", "lag"
    );
    for source in &sources.sources {
        let state = match source.state {
            twinflow_schemas::api::SourceState::Running => paint::good(format!("{:<9}", "running")),
            twinflow_schemas::api::SourceState::Paused => paint::bad(format!("{:<9}", "paused")),
            twinflow_schemas::api::SourceState::Finished => paint::dim(format!("{:<9}", "finished")),
        };
        let position = source.position.as_ref().map_or("-".to_owned(), |p| {
            let text = p.to_string();
            if text.chars().count() > 60 { format!("{}…", text.chars().take(60).collect::<String>()) } else { text }
        });
        let lag = source.lag.as_ref().map_or("-".to_owned(), |lag| match lag.unit {
            twinflow_schemas::api::LagUnit::Records => format!("{} rec", lag.behind),
            twinflow_schemas::api::LagUnit::Bytes => bytesize::ByteSize::b(lag.behind).to_string(),
            twinflow_schemas::api::LagUnit::Pages => format!("{} pages", lag.behind),
            twinflow_schemas::api::LagUnit::Files => format!("{} files", lag.behind),
        });
        println!(
            "{:<16} {:<8} {} {:>9} {:>9.2} {:>7} {lag:>12}  {position}",
            source.name, source.kind, state, source.changes, source.changes_per_second, source.errors
        );
        if let Some(error) = &source.last_error {
            println!("  last refused: {} — {}", error.location, error.reason);
        }
    }
}
