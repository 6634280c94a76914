//! Shared helpers: an app on a temp dir, request builders.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use twinflow_schemas::config::{Config, EmbedderConfig, HashingEmbedderConfig};
use twinflow_server::App;

/// A started app writing to `dir`, with a short tick and the feature-hashing
/// embedder (a test double for the model: deterministic, instant; the real
/// encoder's end-to-end test is `minilm.rs`).
pub(crate) fn app(dir: &Path) -> Arc<App> {
    app_with(dir, |_| {})
}

/// [`app`] with changes to its configuration.
pub(crate) fn app_with(dir: &Path, change: impl FnOnce(&mut Config)) -> Arc<App> {
    let mut config = Config::default();
    config.embedder = EmbedderConfig::Hashing(HashingEmbedderConfig::default());
    config.storage.data_dir = dir.to_path_buf();
    config.engine.tick = Duration::from_millis(10);
    config.engine.workers = 2;
    change(&mut config);
    App::start(config).expect("app starts")
}

/// One NDJSON upsert line.
pub(crate) fn upsert_line(doc_id: &str, title: &str, content: &str) -> String {
    serde_json::json!({
        "op": "upsert", "doc_id": doc_id, "kind": "article", "author": "Grace",
        "title": title, "url": format!("https://example.com/{doc_id}"), "content": content,
    })
    .to_string()
}

/// A paragraph-rich article about `topic`.
pub(crate) fn article(topic: &str, paragraphs: usize) -> String {
    (0..paragraphs)
        .map(|i| {
            format!(
                "Paragraph {i} is about {topic}. The {topic} matters because people rely on {topic} every day. \
                 We discuss {topic} in detail here, with examples number {i} and more words to fill the line."
            )
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}
