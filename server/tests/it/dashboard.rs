//! The dashboard in a real headless browser: Debian's chromium, driven over
//! the WebDriver protocol by chromedriver (`.ci/run` installs both; elsewhere
//! a missing one fails the test unless `TWINFLOW_SKIP_CHROMIUM=1`).
//! It loads the page from a real socket, sees the tables, the throughput,
//! freshness and drift plots, the models and an ingest error, runs a search
//! by typing and clicking, sees the right document first, and saves a
//! screenshot to `target/test-artifacts/dashboard.png`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use twinflow_connectors::IngestError;
use twinflow_schemas::config::DriftConfig;
use twinflow_schemas::{ChangeLimits, parse_change};
use twinflow_server::App;

use crate::fixtures::{app_with, article, upsert_line};

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|dir| names.iter().map(move |n| dir.join(n))).find(|p| p.is_file())
}

/// chromedriver on a free port; killed when dropped.
struct Driver {
    child: Child,
    base: String,
    http: reqwest::blocking::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start(chromedriver: &Path) -> Driver {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let driver = Driver { child, base: format!("http://127.0.0.1:{port}"), http };
        let deadline = Instant::now() + Duration::from_secs(20);
        while driver.http.get(format!("{}/status", driver.base)).send().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        driver
    }

    /// A WebDriver command; its `value`, or a panic with the driver's error.
    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().unwrap_or_else(|e| panic!("{method} {path}: {e}")).json().unwrap();
        if answer["value"]["error"].is_string() {
            panic!("{method} {path}: {}", answer["value"]);
        }
        answer["value"].clone()
    }
}

/// One browser session.
struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = self.driver.http.delete(format!("{}/session/{}", self.driver.base, self.id)).send();
    }
}

impl Session<'_> {
    fn new<'a>(driver: &'a Driver, chromium: &Path, profile: &Path) -> Session<'a> {
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,2200",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        }}});
        let value = driver.call(reqwest::Method::POST, "/session", Some(capabilities));
        Session { driver, id: value["sessionId"].as_str().expect("session id").to_owned() }
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.driver.call(method, &format!("/session/{}{path}", self.id), body)
    }

    fn script(&self, script: &str) -> Value {
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": script, "args": [] })))
    }

    /// Waits until `script` returns something truthy; returns it.
    fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let value = self.script(script);
            if !(value.is_null() || value == false || value == 0 || value == "") {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn element(&self, css: &str) -> String {
        let value =
            self.call(reqwest::Method::POST, "/element", Some(json!({ "using": "css selector", "value": css })));
        value.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).expect("element id").to_owned()
    }
}

/// An app with twelve documents on three topics (one of each per epoch), committed over several
/// epochs with drift windows small enough to be measured, and one ingest error.
fn app_with_history(dir: &Path) -> Arc<App> {
    let app = app_with(dir, |config| {
        config.drift = DriftConfig { window: 4, min_samples: 3, ..DriftConfig::default() };
    });
    let topics = [("lighthouses", "Lighthouses"), ("orchards", "Orchards"), ("glaciers", "Glaciers")];
    for round in 0..4 {
        let changes = topics
            .iter()
            .map(|(topic, title)| {
                let line =
                    upsert_line(&format!("{topic}-{round}"), title, &article(&format!("{topic} in year {round}"), 6));
                parse_change(line.as_bytes(), 1, &ChangeLimits::default()).unwrap()
            })
            .collect();
        let epoch = app.engine().unwrap().submit(changes).unwrap();
        app.engine().unwrap().flush();
        assert!(app.engine().unwrap().wait_committed(epoch, Duration::from_secs(60)));
    }
    app.primary().unwrap().ingest.record_error(IngestError::new(
        "watch-0",
        "/data/inbox/broken.json:3".into(),
        "field `content` must be a string".into(),
    ));
    // Two runs of a search evaluation, and a training run's gain.
    use twinflow_schemas::evaluation::{EvaluationRow, EvaluationRun};
    use twinflow_schemas::stats::Estimate;
    for (at, value) in [(1_000, 0.70), (2_000, 0.74)] {
        let run = EvaluationRun::new("retrieval", at, "faq", 4, 0);
        let e = Estimate { mean: value, low: value - 0.05, high: value + 0.05 };
        let rows = [EvaluationRow::estimate(&run, "base", "vector", "ndcg@10", e, 40)];
        twinflow_sinks::evaluations::append_evaluations(app.store.data_dir(), &rows).unwrap();
    }
    let run = EvaluationRun::new("adapter-run", 3_000, "instruct-v1", 4, 1);
    let gain = Estimate { mean: -0.01, low: -0.05, high: 0.03 };
    let rows = [EvaluationRow::estimate(&run, "adapter-v1", "recall@10 over base", "gain", gain, 90)];
    twinflow_sinks::evaluations::append_evaluations(app.store.data_dir(), &rows).unwrap();
    app
}

#[test]
fn the_dashboard_shows_the_pipeline_and_searches_in_a_real_browser() {
    let (Some(chromedriver), Some(chromium)) = (find(&["chromedriver"]), find(&["chromium", "chromium-browser"]))
    else {
        twinflow_schemas::testing::tool_missing("chromium", "apt-get install chromium chromium-driver");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_history(dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = twinflow_server::router(app.clone());
    runtime.spawn(async move { axum::serve(listener, router).await });

    let driver = Driver::start(&chromedriver);
    let session = Session::new(&driver, &chromium, &dir.path().join("profile"));
    session.call(reqwest::Method::POST, "/url", Some(json!({ "url": format!("http://127.0.0.1:{port}/") })));
    // No session yet: the page asks for a key. A wrong one is refused on the page; a `read` key logs in.
    let key = session.element("#key");
    let log_in = session.element("#login-button");
    session.call(reqwest::Method::POST, &format!("/element/{key}/value"), Some(json!({ "text": "tfk_wrong" })));
    session.call(reqwest::Method::POST, &format!("/element/{log_in}/click"), Some(json!({})));
    let refused = session.wait_for("the refusal", "return document.getElementById('error').textContent || null");
    assert!(refused.as_str().unwrap().contains("not valid"), "{refused}");
    session.call(reqwest::Method::POST, &format!("/element/{key}/clear"), Some(json!({})));
    let text = json!({ "text": crate::fixtures::READ_KEY });
    session.call(reqwest::Method::POST, &format!("/element/{key}/value"), Some(text));
    session.call(reqwest::Method::POST, &format!("/element/{log_in}/click"), Some(json!({})));
    session.wait_for("the first refresh", "return document.body && document.body.dataset.ready === 'true'");
    // The session cookie is out of the page's reach (HttpOnly).
    let cookies = session.script("return document.cookie");
    assert_eq!(cookies, "", "the page cannot read the session");

    // The pipeline: cards, table sizes, plots drawn from the timeline, drift with thresholds.
    let documents = session.script("return document.querySelector('[data-table=documents] td.num').textContent");
    assert_eq!(documents, "12");
    let epoch = session.script("return document.querySelector('[data-label=\"committed epoch\"] .value').textContent");
    assert_eq!(epoch, "4");
    session.wait_for("throughput bars", "return document.querySelectorAll('#throughput rect.bar').length");
    let points =
        session.wait_for("freshness points", "return document.querySelectorAll('#freshness circle.point').length");
    assert_eq!(points, 4, "one freshness point per commit");
    let metrics = session.wait_for(
        "drift plots",
        "return [...document.querySelectorAll('#drift svg[data-metric]')].map(s => s.dataset.metric).join(',')",
    );
    assert!(metrics.as_str().unwrap().contains("mmd"), "drift metrics plotted: {metrics}");
    let reference = session.script("return document.getElementById('drift-state').textContent");
    assert!(reference.as_str().unwrap().starts_with("reference: bootstrap@"), "{reference}");
    let thresholds = session.script("return document.querySelectorAll('#drift path.threshold').length");
    assert!(thresholds.as_u64().unwrap() >= 1, "drift thresholds drawn: {thresholds}");
    let series = session.wait_for(
        "evaluation plots",
        "return [...document.querySelectorAll('#evals svg[data-series]')].map(s => s.dataset.series).join('|') || null",
    );
    assert_eq!(series, "retrieval · faq · vector · base · ndcg@10|adapter-run · gain", "{series}");
    let bounds = session.script("return document.querySelectorAll('#evals path.bound').length");
    assert_eq!(bounds, 4, "each series' interval, low and high");
    let label = session.script("return document.getElementById('evals').textContent");
    assert!(label.as_str().unwrap().contains("0.74 [0.69, 0.79]"), "the newest value with its interval: {label}");
    let models = session.script("return document.getElementById('models').textContent");
    assert!(models.as_str().unwrap().contains("embedding adapter"), "{models}");
    let errors = session.script("return document.querySelector('#errors tbody').textContent");
    assert!(errors.as_str().unwrap().contains("field `content` must be a string"), "{errors}");

    // A search, typed and clicked: the document on that topic comes first.
    let input = session.element("#q");
    session.call(reqwest::Method::POST, &format!("/element/{input}/value"), Some(json!({ "text": "orchards" })));
    let button = session.element("#search-button");
    session.call(reqwest::Method::POST, &format!("/element/{button}/click"), Some(json!({})));
    let first = session.wait_for(
        "search results",
        "const r = document.querySelector('#results li.result'); return r ? r.dataset.doc : null",
    );
    assert!(first.as_str().unwrap().starts_with("orchards-"), "the first result: {first}");
    let summary = session.script("return document.getElementById('answer').textContent");
    assert!(summary.as_str().unwrap().contains("as of epoch 4"), "{summary}");

    // Nothing failed in the page, then the screenshot.
    let page_errors = session.script("return window.twinflowErrors");
    assert_eq!(page_errors, json!([]), "errors in the page");
    let png = session.call(reqwest::Method::GET, "/screenshot", None);
    let png = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "a real screenshot");
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("dashboard.png"), &png).unwrap();
    eprintln!("screenshot: {}", artifacts.join("dashboard.png").display());
}
