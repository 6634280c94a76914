//! Tables for people: the drift monitor and the model versions.

use crate::ui::paint;

/// `twinflow drift`: the state, then the latest rows as a table.
pub(super) fn print_drift(drift: &serde_json::Value) {
    let state = &drift["state"];
    if state.is_null() {
        println!("drift monitoring is off ([drift] enabled = false)");
        return;
    }
    let metrics = &state["metrics"];
    let thresholds = &state["thresholds"];
    println!(
        "epoch {}  reference {} ({} chunks, epoch {})  window {} chunks from epoch {}  new since reference {}",
        state["epoch"],
        state["reference"],
        state["reference_size"],
        state["reference_epoch"],
        state["window_size"],
        state["window_start"],
        state["new_samples"]
    );
    for metric in ["mean_shift", "mmd", "oov_rate"] {
        let value = metrics[metric].as_f64();
        let threshold = thresholds[metric].as_f64().unwrap_or(0.0);
        let over = value.is_some_and(|v| threshold > 0.0 && v >= threshold);
        println!(
            "  {metric:<10} {:>9}  threshold {threshold:<6} {}",
            value.map_or("-".to_owned(), |v| format!("{v:.4}")),
            if over { paint::bad("OVER") } else { paint::dim("") }
        );
    }
    println!(
        "  trigger {}  ({} so far; last: {})",
        if state["armed"].as_bool() == Some(true) {
            "armed"
        } else {
            "disarmed until drift falls below threshold × hysteresis or min_samples more chunks arrive"
        },
        state["triggers"],
        state["last_trigger"]["epoch"].as_u64().map_or("never".to_owned(), |e| format!("epoch {e}"))
    );
    if let Some(rows) = drift["recent"].as_array().filter(|r| !r.is_empty()) {
        println!("\n  epoch  window_start  window_size  metric      value     threshold  triggered");
        for row in rows {
            println!(
                "  {:<6} {:<13} {:<12} {:<11} {:<9.4} {:<10} {}",
                row["epoch"],
                row["window_start"],
                row["window_size"],
                row["metric"].as_str().unwrap_or(""),
                row["value"].as_f64().unwrap_or(0.0),
                row["threshold"],
                if row["triggered"] == true { paint::bad("true") } else { paint::dim("false") }
            );
        }
    }
}

/// `twinflow models list`.
pub(super) fn print_models(models: &serde_json::Value) {
    println!(
        "active: {}   base model: {}",
        paint::good(models["active"].as_str().unwrap_or("base")),
        models["base_model"]
    );
    let versions = models["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        println!("no model versions yet (`twinflow train`, or drift triggers one)");
    }
    for card in versions {
        let e = &card["evaluation"];
        println!(
            "  {} dataset instruct v{} (epoch {}, {} train / {} test pairs)  recall@{}: base {:.4}, parent {:.4}, candidate {:.4}  {}",
            paint::id(format_args!("v{:<3}", card["version"])),
            card["dataset"]["version"],
            card["dataset"]["epoch"],
            card["dataset"]["train_pairs"],
            card["dataset"]["test_pairs"],
            e["k"],
            e["base"].as_f64().unwrap_or(0.0),
            e["parent"].as_f64().unwrap_or(0.0),
            e["candidate"].as_f64().unwrap_or(0.0),
            card["decision"].as_str().unwrap_or("")
        );
    }
    let training = &models["training"];
    if training["state"] == "running" {
        println!("training: {} step {}/{}", training["phase"], training["step"], training["steps"]);
    }
}
