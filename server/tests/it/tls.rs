//! TLS on both endpoints (`[server.tls]`), with the test-only CA and
//! `localhost` certificate of `server/tests/tls/`: HTTPS answers clients that
//! trust the CA and nobody speaking plain HTTP; the session cookie is
//! `Secure`; Debian's `psql` connects with `sslmode=verify-full` (with a
//! password, and with SCRAM bound to the certificate) and is refused,
//! before any key is sent, without TLS.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use twinflow_schemas::config::TlsConfig;
use twinflow_server::App;

use crate::fixtures::{ADMIN_KEY, READ_KEY, app_with, give_scram_verifiers};

fn material(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tls").join(name)
}

/// An app serving HTTPS and pgwire over TLS on loopback: (app, its runtime, HTTPS port, Postgres port).
fn tls_app(dir: &std::path::Path) -> (Arc<App>, tokio::runtime::Runtime, u16, u16) {
    let app = app_with(dir, |config| {
        give_scram_verifiers(config);
        config.server.tls =
            Some(TlsConfig { cert: material("server.crt"), key: material("server.key"), ca: Some(material("ca.crt")) });
    });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let http = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let pg = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let (http_port, pg_port) = (http.local_addr().unwrap().port(), pg.local_addr().unwrap().port());
    let served = app.clone();
    runtime.spawn(async move { twinflow_server::listen::serve_http(served, http, std::future::pending()).await });
    let pg_server = runtime.block_on(async { twinflow_server::listen::pg_server(&app) }).unwrap();
    runtime.spawn(pg_server.serve(pg));
    (app, runtime, http_port, pg_port)
}

fn https(key: Option<&str>, trusted: bool) -> reqwest::blocking::Client {
    let ca = std::fs::read(material("ca.crt")).unwrap();
    let roots = trusted.then_some(ca.as_slice());
    twinflow_server::client::blocking_client_trusting(Duration::from_secs(30), key, roots).unwrap()
}

#[test]
fn https_and_postgres_over_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _runtime, port, pg_port) = tls_app(dir.path());
    let base = format!("https://localhost:{port}");

    // A client that trusts the CA: the same answers as over HTTP, keys and all.
    let healthz = https(None, true).get(format!("{base}/healthz")).send().unwrap();
    assert_eq!(healthz.status(), StatusCode::OK);
    assert_eq!(https(None, true).get(format!("{base}/v1/status")).send().unwrap().status(), StatusCode::UNAUTHORIZED);
    let status = https(Some(READ_KEY), true).get(format!("https://127.0.0.1:{port}/v1/status")).send().unwrap();
    assert_eq!(status.status(), StatusCode::OK, "the certificate names 127.0.0.1 too");
    let client = twinflow_server::client::Client::trusting(
        &base,
        Some(READ_KEY),
        Some(&std::fs::read(material("ca.crt")).unwrap()),
    )
    .unwrap();
    assert_eq!(client.status().unwrap().committed_epoch, app.store.committed_epoch());

    // The dashboard's session cookie is Secure over HTTPS.
    let session = https(None, true)
        .post(format!("{base}/v1/session"))
        .header("content-type", "application/json")
        .body(format!("{{\"key\":\"{ADMIN_KEY}\"}}"))
        .send()
        .unwrap();
    assert_eq!(session.status(), StatusCode::OK);
    let cookie = session.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("; Secure") && cookie.contains("HttpOnly"), "{cookie}");

    // A client that does not trust the CA stops at the handshake.
    let untrusted = https(None, false).get(format!("{base}/healthz")).send().unwrap_err();
    assert!(format!("{untrusted:?}").to_lowercase().contains("certificate"), "{untrusted:?}");
    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "plain HTTP was answered: {}", String::from_utf8_lossy(&answer));

    // psql: verify-full against the CA works; without TLS the password is never asked for.
    let psql_as = |user: &str, options: &str| {
        Command::new("psql")
            .arg(format!(
                "host=localhost port={pg_port} user={user} dbname=twinflow {options} sslrootcert={}",
                material("ca.crt").display()
            ))
            .args(["-X", "-A", "-t", "-c", "SELECT COUNT(*) FROM documents"])
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGPASSWORD", READ_KEY)
            .output()
    };
    let psql = |sslmode: &str| psql_as("twinflow", &format!("sslmode={sslmode}"));
    match psql("verify-full") {
        Err(_) => twinflow_schemas::testing::tool_missing("psql", "apt-get install postgresql-client"),
        Ok(out) => {
            assert!(out.status.success(), "psql over TLS: {}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
            let plain = psql("disable").unwrap();
            assert!(!plain.status.success());
            let stderr = String::from_utf8_lossy(&plain.stderr);
            assert!(stderr.contains("TLS only"), "{stderr}");
            // As the key's name: SCRAM-SHA-256-PLUS, the proof bound to this server's certificate.
            let bound = psql_as("reader", "sslmode=verify-full channel_binding=require").unwrap();
            assert!(bound.status.success(), "SCRAM with channel binding: {}", String::from_utf8_lossy(&bound.stderr));
            let plain = psql_as("reader", "sslmode=disable").unwrap();
            assert!(String::from_utf8_lossy(&plain.stderr).contains("TLS only"));
        }
    }
    app.shutdown().unwrap();
}

/// A certificate and key that do not belong together, or a missing file, stop the start with a message naming them.
#[test]
fn a_wrong_certificate_or_key_is_named() {
    let missing = TlsConfig { cert: material("nope.crt"), key: material("server.key"), ca: None };
    let error = twinflow_server::tls::server_config(&missing, &[]).unwrap_err();
    assert!(format!("{error:#}").contains("nope.crt"), "{error:#}");
    let swapped = TlsConfig { cert: material("server.key"), key: material("server.crt"), ca: None };
    let error = twinflow_server::tls::server_config(&swapped, &[]).unwrap_err();
    assert!(format!("{error:#}").contains("server.key"), "{error:#}");
    let wrong_key = TlsConfig { cert: material("ca.crt"), key: material("server.key"), ca: None };
    let error = twinflow_server::tls::server_config(&wrong_key, &[]).unwrap_err();
    assert!(format!("{error:#}").contains("does not fit"), "{error:#}");
}
