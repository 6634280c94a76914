//! The Fluvio source and publisher, through the official `fluvio` client,
//! against `FluvioTestServer` (a protocol-level test server, not a Fluvio
//! cluster: none can be installed here). Covers produce, fetch from an
//! offset, several partitions, bad records, resuming from a committed
//! position, and reconnecting after the cluster goes away.

use std::collections::BTreeMap;

use crossbeam_channel::Receiver;
use serde_json::{Value, json};
use twinflow_connectors::fluvio::test_server::FluvioTestServer;
use twinflow_connectors::{Error, FluvioPublisher, FluvioSource, SourceEvent, SourceHandle};
use twinflow_schemas::ChangeLimits;
use twinflow_schemas::config::{FluvioSourceConfig, StartFrom};

use crate::support::{receive, until_offsets, until_position, upsert_record};

const TOPIC: &str = "posts";

fn delete(id: &str) -> (String, Vec<u8>) {
    (id.to_owned(), json!({"op": "delete", "doc_id": id}).to_string().into_bytes())
}

fn config(server: &FluvioTestServer) -> FluvioSourceConfig {
    FluvioSourceConfig { endpoint: server.endpoint(), topic: TOPIC.into(), batch: 8, ..FluvioSourceConfig::default() }
}

fn spawn(config: FluvioSourceConfig, resume: Option<Value>) -> (SourceHandle, Receiver<SourceEvent>) {
    let (tx, rx) = crossbeam_channel::bounded(4);
    let handle = FluvioSource::spawn("fluvio-0".into(), config, ChangeLimits::default(), resume, tx).unwrap();
    (handle, rx)
}

#[test]
fn keyed_records_over_partitions_in_order_with_bad_records_as_errors() {
    let server = FluvioTestServer::start(&[(TOPIC, 3)]).unwrap();
    let publisher = FluvioPublisher::connect(&server.endpoint(), TOPIC).unwrap();
    let mut records: Vec<_> =
        (0..30).map(|i| upsert_record(&format!("post-{i}"), &format!("version one of post {i}"))).collect();
    records.push(("bad".into(), b"{not json".to_vec()));
    records.push(delete("post-3"));
    records.push(upsert_record("post-4", "version two"));
    publisher.publish(records).unwrap();

    // Keys spread over the partitions; one key stays in one partition.
    let sizes: Vec<i64> = (0..3).map(|p| server.end_offset(TOPIC, p)).collect();
    assert_eq!(sizes.iter().sum::<i64>(), 33);
    assert!(sizes.iter().filter(|n| **n > 0).count() >= 2, "keys went to one partition: {sizes:?}");

    let (_source, rx) = spawn(config(&server), None);
    let (seen, position) = until_offsets(&rx, 33);
    assert_eq!(seen.changes.len(), 32);
    assert_eq!(seen.errors.len(), 1);
    let error = &seen.errors[0];
    assert!(error.location.starts_with("fluvio://posts/") && error.location.contains('@'), "{}", error.location);
    assert!(error.reason.contains("JSON"), "{}", error.reason);
    // Per document, changes keep the order they were produced in.
    let ops = seen.ops();
    let at = |op: &str| ops.iter().position(|o| o == op).unwrap_or_else(|| panic!("{op} missing from {ops:?}"));
    assert!(at("+post-3") < at("-post-3"));
    let post4: Vec<_> =
        seen.upserts().into_iter().filter(|d| d.doc_id == "post-4").map(|d| d.content.clone()).collect();
    assert_eq!(post4, ["version one of post 4", "version two"]);
    assert!(seen.upserts().iter().all(|d| d.source == "fluvio-0"));
    let expected: BTreeMap<String, Value> = (0..3).map(|p| (p.to_string(), json!(sizes[p]))).collect();
    assert_eq!(position, json!({"topic": TOPIC, "offsets": expected}));
}

#[test]
fn resumes_from_a_committed_position_and_reads_only_what_follows() {
    let server = FluvioTestServer::start(&[(TOPIC, 2)]).unwrap();
    let publisher = FluvioPublisher::connect(&server.endpoint(), TOPIC).unwrap();
    publisher.publish((0..10).map(|i| upsert_record(&format!("a-{i}"), "first"))).unwrap();
    let (source, rx) = spawn(config(&server), None);
    let (seen, position) = until_offsets(&rx, 10);
    assert_eq!(seen.changes.len(), 10);
    source.stop();

    publisher.publish((0..5).map(|i| upsert_record(&format!("b-{i}"), "second"))).unwrap();
    let (_source, rx) = spawn(config(&server), Some(position));
    let (seen, _) = until_offsets(&rx, 15);
    let mut ops = seen.ops();
    ops.sort();
    assert_eq!(ops, ["+b-0", "+b-1", "+b-2", "+b-3", "+b-4"]);

    // A position from the middle of a partition: the rest of it, exactly.
    let partition0 = server.records(TOPIC, 0);
    assert!(partition0.len() >= 2, "{} records in partition 0", partition0.len());
    let middle = json!({"topic": TOPIC, "offsets": {"0": 1, "1": server.end_offset(TOPIC, 1)}});
    let (_source, rx) = spawn(config(&server), Some(middle));
    let (seen, _) = until_offsets(&rx, 15);
    let expected: Vec<String> = partition0[1..]
        .iter()
        .map(|(_, key, _)| format!("+{}", String::from_utf8(key.clone().unwrap()).unwrap()))
        .collect();
    assert_eq!(seen.ops(), expected);
}

#[test]
fn start_at_the_end_skips_what_was_there() {
    let server = FluvioTestServer::start(&[(TOPIC, 1)]).unwrap();
    let publisher = FluvioPublisher::connect(&server.endpoint(), TOPIC).unwrap();
    publisher.publish([upsert_record("old", "before")]).unwrap();
    let config = FluvioSourceConfig { start: StartFrom::End, ..config(&server) };
    let (_source, rx) = spawn(config, None);
    // The first position confirms where it starts: after the old record.
    let (seen, position) = until_position(&rx);
    assert!(seen.changes.is_empty());
    assert_eq!(position["offsets"], json!({}));
    publisher.publish([upsert_record("new", "after")]).unwrap();
    let seen = receive(&rx, 1, 0);
    assert_eq!(seen.ops(), ["+new"]);
}

#[test]
fn reconnects_when_the_cluster_comes_back_and_loses_nothing() {
    let mut server = FluvioTestServer::start(&[(TOPIC, 2)]).unwrap();
    let publisher = FluvioPublisher::connect(&server.endpoint(), TOPIC).unwrap();
    publisher.publish((0..6).map(|i| upsert_record(&format!("a-{i}"), "first"))).unwrap();
    let (_source, rx) = spawn(config(&server), None);
    let (seen, _) = until_offsets(&rx, 6);
    assert_eq!(seen.changes.len(), 6);
    let connections = server.connections();

    server.restart().unwrap();
    // The old producer's connection is gone with the old server; a new one publishes.
    let publisher = FluvioPublisher::connect(&server.endpoint(), TOPIC).unwrap();
    publisher.publish((0..4).map(|i| upsert_record(&format!("b-{i}"), "second"))).unwrap();
    let (seen, _) = until_offsets(&rx, 10);
    let mut ops = seen.ops();
    ops.sort();
    assert_eq!(ops, ["+b-0", "+b-1", "+b-2", "+b-3"], "nothing twice, nothing lost");
    // Two connections (controller and SPU) are the new publisher's, two the source's.
    assert!(server.connections() >= connections + 4, "the source connected again");
}

#[test]
fn bad_settings_are_fatal_at_open() {
    let server = FluvioTestServer::start(&[(TOPIC, 2)]).unwrap();
    let (tx, _rx) = crossbeam_channel::bounded(1);
    let open = |config: FluvioSourceConfig| {
        FluvioSource::spawn("fluvio-0".into(), config, ChangeLimits::default(), None, tx.clone()).unwrap_err()
    };
    let error = open(FluvioSourceConfig { topic: "nope".into(), ..config(&server) });
    assert!(matches!(&error, Error::Config { reason, .. } if reason.contains("no topic \"nope\"")), "{error}");
    let error = open(FluvioSourceConfig { partitions: vec![2], ..config(&server) });
    assert!(matches!(&error, Error::Config { reason, .. } if reason.contains("no partition 2")), "{error}");
    // Nothing listens on a port just closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let error = open(FluvioSourceConfig { endpoint: closed.to_string(), ..config(&server) });
    assert!(matches!(&error, Error::Fluvio { retryable: false, .. }), "{error}");
}
