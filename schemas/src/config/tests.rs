//! Whole-tree tests: defaults survive a JSON round trip, tagged sources and
//! publishers parse, unknown keys are refused.

use std::time::Duration;

use super::*;
use crate::records::DocumentKind;

#[test]
fn defaults_round_trip_through_json() {
    let config = Config::default();
    let json = serde_json::to_value(&config).unwrap();
    assert_eq!(json["engine"]["tick"], "50ms");
    let back: Config = serde_json::from_value(json).unwrap();
    assert_eq!(back, config);
}

#[test]
fn tagged_sources_and_unknown_keys() {
    let json = r#"{"sources":[{"type":"watch","config":{"path":"/tmp/x","kind":"post"}}],
                   "engine":{"tick":"200ms","workers":4}}"#;
    let config: Config = serde_json::from_str(json).unwrap();
    assert_eq!(config.engine.tick, Duration::from_millis(200));
    assert!(matches!(&config.sources[0], SourceConfig::Watch(w) if w.kind == DocumentKind::Post));
    let err = serde_json::from_str::<Config>(r#"{"engine":{"tik":"1s"}}"#).unwrap_err();
    assert!(err.to_string().contains("tik"), "{err}");
}

#[test]
fn streaming_sources_and_publishers() {
    let json = r#"{"sources":[
        {"type":"fluvio","config":{"endpoint":"10.0.0.1:9003","topic":"posts","partitions":[0,2],"start":"end"}},
        {"type":"kafka","config":{"brokers":"k1:9092,k2:9092","topic":"posts","options":{"security.protocol":"SSL"}}}],
        "publish":{"kafka":{"brokers":"k1:9092","topic":"out","tables":["documents","embeddings"]}}}"#;
    let config: Config = serde_json::from_str(json).unwrap();
    assert!(
        matches!(&config.sources[0], SourceConfig::Fluvio(f) if f.partitions == [0, 2] && f.start == StartFrom::End)
    );
    assert!(matches!(&config.sources[1], SourceConfig::Kafka(k) if k.group == "twinflow" && k.options.len() == 1));
    let kafka = config.publish.kafka.unwrap();
    assert_eq!(kafka.tables, [crate::TableName::Documents, crate::TableName::Embeddings]);
    assert!(config.publish.fluvio.is_none());
    let err = serde_json::from_str::<Config>(r#"{"publish":{"kafka":{"topik":"x"}}}"#).unwrap_err();
    assert!(err.to_string().contains("topik"), "{err}");
}

#[test]
fn rerank_reads_its_names_and_the_old_switch() {
    let rag = |json: &str| serde_json::from_str::<Config>(&format!(r#"{{"rag":{{"rerank":{json}}}}}"#)).map(|c| c.rag);
    assert_eq!(rag("true").unwrap().rerank, Rerank::Chunk);
    assert_eq!(rag("false").unwrap().rerank, Rerank::Off);
    assert_eq!(rag(r#""sentences""#).unwrap().rerank, Rerank::Sentences);
    assert_eq!(rag(r#""lead""#).unwrap().rerank, Rerank::Lead);
    let err = rag(r#""cosine""#).unwrap_err();
    assert!(err.to_string().contains("cosine") && err.to_string().contains("sentences"), "{err}");
    assert_eq!(RagConfig::default().rerank, Rerank::Chunk);
    assert_eq!(serde_json::to_value(Rerank::Sentences).unwrap(), "sentences");
}

#[test]
fn a_postgres_source_parses_from_toml_and_owns_its_tables_ids() {
    let text = r#"
        [[sources]]
        type = "postgres"
        config = { url = "host=db user=twin dbname=blog", tables = ["posts", "drafts.notes"], content_column = "body", title_column = "title", poll = "1s", format = "markdown" }
    "#;
    let config: Config = toml::from_str(text).unwrap();
    let SourceConfig::Postgres(pg) = &config.sources[0] else { panic!("{:?}", config.sources[0]) };
    assert_eq!((pg.doc_id_column.as_str(), pg.content_column.as_str()), ("id", "body"));
    assert_eq!(pg.poll, Duration::from_secs(1));
    assert_eq!(pg.format, Some(crate::records::ContentFormat::Markdown));
    assert_eq!(config.sources[0].name(0), "postgres-0");
    // Its documents' ids are its own: another source may not make them.
    let watch = SourceConfig::Watch(WatchSourceConfig { doc_id_prefix: "pg:posts/".into(), ..Default::default() });
    let err = DocIdNamespaces::of(&[config.sources[0].clone(), watch]).unwrap_err();
    assert!(err.contains("pg:posts/"), "{err}");
    let other = SourceConfig::Postgres(PostgresSourceConfig { tables: vec!["comments".into()], ..Default::default() });
    DocIdNamespaces::of(&[config.sources[0].clone(), other]).unwrap();
    let err = toml::from_str::<Config>("[[sources]]\ntype = \"postgres\"\nconfig = { tabels = [] }\n").unwrap_err();
    assert!(err.to_string().contains("tabels"), "{err}");
}
