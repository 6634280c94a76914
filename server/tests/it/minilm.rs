//! The real sentence encoder end to end: configured as the embedder, it
//! embeds ingested chunks and the query, and search ranks by meaning.

use std::time::Duration;

use twinflow_schemas::config::{Config, EmbedderConfig, MiniLmEmbedderConfig};
use twinflow_schemas::{ChangeLimits, parse_change};
use twinflow_server::App;

use crate::fixtures::upsert_line;

#[test]
fn minilm_embeds_and_search_ranks_by_meaning() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.storage.data_dir = dir.path().to_path_buf();
    config.engine.tick = Duration::from_millis(10);
    config.embedder = EmbedderConfig::Minilm(MiniLmEmbedderConfig::default());
    let app = App::start(config).expect("app starts with MiniLM (fetches weights with pip when missing)");
    let docs = [
        ("cats", "Cats", "Kittens purr and chase mice around the farmhouse barn."),
        ("ships", "Ships", "The freighter crossed the ocean carrying containers to the harbour."),
        ("tax", "Tax", "Congress debated the income tax rates for the coming fiscal year."),
    ];
    let changes = docs
        .iter()
        .map(|(id, title, text)| {
            parse_change(upsert_line(id, title, text).as_bytes(), 1, &ChangeLimits::default()).unwrap()
        })
        .collect();
    let epoch = app.engine().unwrap().submit(changes).unwrap();
    app.engine().unwrap().flush();
    assert!(app.engine().unwrap().wait_committed(epoch, Duration::from_secs(120)));
    let embedder = app.engine().unwrap().embedder().clone();
    assert!(embedder.model_id().starts_with("all-MiniLM-L6-v2@"), "{}", embedder.model_id());
    assert_eq!(embedder.dim(), 384);
    // No word in common with the answer: only a semantic model finds it.
    let query = embedder.embed_batch(&["a vessel at sea"]).unwrap().remove(0);
    let (_, hits) = app.store.search(&query, 3);
    assert_eq!(hits[0].sources[0].doc_id, "ships", "{hits:?}");
    app.shutdown().unwrap();
}

/// Article chunks are cut at 1000–2000 characters, often more than the
/// model's 256 tokens: they must be split to fit, counted by the model's own
/// tokenizer, never truncated.
#[test]
fn chunks_fit_the_model_token_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.storage.data_dir = dir.path().to_path_buf();
    config.engine.tick = Duration::from_millis(10);
    assert_eq!(config.embedder, EmbedderConfig::Minilm(MiniLmEmbedderConfig::default()), "MiniLM is the default");
    let app = App::start(config).unwrap();
    // Long words of rare letters: several word pieces each, so 2000 characters are far over 256 tokens.
    let paragraph = (0..60).map(|i| format!("Quixotic zephyr{i} xylophones jubilantly")).collect::<Vec<_>>().join(". ");
    let content = format!("{paragraph}.\n\n{paragraph}.");
    let change = parse_change(upsert_line("long", "Long", &content).as_bytes(), 1, &ChangeLimits::default()).unwrap();
    let epoch = app.engine().unwrap().submit(vec![change]).unwrap();
    app.engine().unwrap().flush();
    assert!(app.engine().unwrap().wait_committed(epoch, Duration::from_secs(120)));
    let embedder = app.engine().unwrap().embedder().clone();
    let chunks = app.store.current_chunks();
    assert!(chunks.len() >= 4, "{} chunks", chunks.len());
    for chunk in &chunks {
        let tokens = embedder.count_tokens(&chunk.text);
        assert!(tokens <= 256, "a chunk of {tokens} tokens: {:?}", &chunk.text[..80]);
        assert_eq!(chunk.token_estimate as usize, tokens);
    }
    app.shutdown().unwrap();
}
