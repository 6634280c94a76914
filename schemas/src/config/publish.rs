//! `[publish]`: the topics (Fluvio, Kafka) that receive every committed
//! epoch's table changes, besides Parquet.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Outputs that receive every committed epoch's table changes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublishConfig {
    /// A Fluvio topic (none by default).
    pub fluvio: Option<FluvioPublishConfig>,
    /// A Kafka topic (none by default).
    pub kafka: Option<KafkaPublishConfig>,
}

/// Publishing table changes to a Kafka topic, as to a Fluvio one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaPublishConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    /// The topic (it must exist).
    pub topic: String,
    /// The tables whose changes are published.
    pub tables: Vec<crate::TableName>,
    /// Further librdkafka settings.
    pub options: std::collections::BTreeMap<String, String>,
    /// How long publishing one epoch may take before it is retried.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for KafkaPublishConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic: "twinflow-changes".into(),
            tables: vec![crate::TableName::Documents, crate::TableName::Chunks],
            options: std::collections::BTreeMap::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Publishing table changes to a Fluvio topic: one record per row change,
/// keyed by the row's document, valued `{"table", "epoch", "diff", "row"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FluvioPublishConfig {
    /// The cluster's controller, `host:port`.
    pub endpoint: String,
    /// The topic (it must exist).
    pub topic: String,
    /// The tables whose changes are published.
    pub tables: Vec<crate::TableName>,
    /// How long publishing one epoch may take before it is retried.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for FluvioPublishConfig {
    fn default() -> Self {
        Self {
            endpoint: "127.0.0.1:9003".into(),
            topic: "twinflow-changes".into(),
            tables: vec![crate::TableName::Documents, crate::TableName::Chunks],
            timeout: Duration::from_secs(30),
        }
    }
}
