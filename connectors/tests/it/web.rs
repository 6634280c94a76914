//! The web crawler against a real HTTP server on loopback whose pages
//! change, disappear and appear between crawls: links, depth, robots.txt,
//! conditional requests (ETag), deletes on 404, a sitemap, noindex, size
//! limits, resuming from a committed position, and the re-crawl schedule.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use twinflow_connectors::WebSource;
use twinflow_schemas::ContentFormat;
use twinflow_schemas::config::WebSourceConfig;

use crate::support::until_position;

/// The site: path → (HTML, version); what was asked, by path: (200s, 304s).
#[derive(Default)]
struct Site {
    pages: HashMap<String, (String, u32)>,
    /// path → `Location` of a 301.
    redirects: HashMap<String, String>,
    robots: String,
    hits: HashMap<String, (usize, usize)>,
}

type Shared = Arc<Mutex<Site>>;

async fn serve(site: axum::extract::State<Shared>, uri: Uri, headers: HeaderMap) -> Response {
    let mut site = site.lock().unwrap();
    let path = uri.path().to_owned();
    if path == "/robots.txt" {
        return site.robots.clone().into_response();
    }
    if let Some(location) = site.redirects.get(&path).cloned() {
        site.hits.entry(path).or_default().0 += 1;
        return (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, location)]).into_response();
    }
    let Some((html, version)) = site.pages.get(&path).cloned() else { return StatusCode::NOT_FOUND.into_response() };
    let etag = format!("\"v{version}\"");
    let hits = site.hits.entry(path.clone()).or_default();
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        hits.1 += 1;
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    hits.0 += 1;
    let content_type = if path.ends_with(".xml") { "application/xml" } else { "text/html; charset=utf-8" };
    ([(header::ETAG, etag), (header::CONTENT_TYPE, content_type.to_owned())], html).into_response()
}

/// Starts the site on a free loopback port; returns its base URL.
fn start(site: Shared) -> String {
    crate::support::serve_loopback(axum::Router::new().fallback(serve).with_state(site))
}

fn page(title: &str, author: &str, body: &str, links: &[&str]) -> String {
    let links: String = links.iter().map(|l| format!(r#"<a href="{l}">{l}</a> "#)).collect();
    format!(
        r#"<html><head><title>{title}</title><meta name="author" content="{author}"></head>
        <body><nav>menu</nav><article><h1>{title}</h1><p>{body}</p><p>{links}</p></article></body></html>"#
    )
}

fn set(site: &Shared, path: &str, html: String) {
    let mut site = site.lock().unwrap();
    let version = site.pages.get(path).map_or(1, |(_, v)| v + 1);
    site.pages.insert(path.to_owned(), (html, version));
}

fn config(base: &str) -> WebSourceConfig {
    WebSourceConfig {
        seeds: vec![format!("{base}/")],
        rate_per_host: 1_000.0,
        recrawl: Duration::ZERO,
        max_page: bytesize::ByteSize::kib(8),
        ..WebSourceConfig::default()
    }
}

fn sorted(mut ops: Vec<String>) -> Vec<String> {
    ops.sort();
    ops
}

#[test]
fn crawls_recrawls_conditionally_and_resumes() {
    let site: Shared = Arc::default();
    site.lock().unwrap().robots = "User-agent: *\nDisallow: /private/\n".into();
    set(
        &site,
        "/",
        page(
            "Home",
            "Ada",
            "Welcome.",
            &["/a.html", "b.html", "/private/x.html", "https://elsewhere.example/", "mailto:ada@example.com"],
        ),
    );
    set(&site, "/a.html", page("A", "Ada", "First post.", &["/c.html"]));
    set(&site, "/b.html", page("B", "Ada", "Second post.", &[]));
    set(&site, "/c.html", page("C", "Grace", "Third post.", &[]));
    set(&site, "/private/x.html", page("X", "Ada", "Secret.", &[]));
    set(&site, "/big.html", page("Big", "Ada", &"word ".repeat(4_000), &[]));
    set(
        &site,
        "/hidden.html",
        r#"<html><head><meta name="robots" content="noindex"></head><body>no</body></html>"#.into(),
    );
    let base = start(site.clone());
    set(
        &site,
        "/",
        page(
            "Home",
            "Ada",
            "Welcome.",
            &["/a.html", "b.html", "/private/x.html", "/big.html", "/hidden.html", "https://elsewhere.example/"],
        ),
    );
    let url = |p: &str| format!("{base}{p}");
    let state_dir = tempfile::tempdir().unwrap();

    // First crawl: every reachable page once; robots.txt, other hosts, noindex and a too large page stay out.
    let (tx, rx) = crossbeam_channel::bounded(64);
    let handle = WebSource::spawn("web".into(), config(&base), state_dir.path().to_owned(), None, tx).unwrap();
    let (seen, first) = until_position(&rx);
    handle.wait().unwrap();
    assert_eq!(
        sorted(seen.ops()),
        sorted(vec![
            format!("+{}", url("/")),
            format!("+{}", url("/a.html")),
            format!("+{}", url("/b.html")),
            format!("+{}", url("/c.html"))
        ])
    );
    let c = seen.upserts().into_iter().find(|d| d.doc_id.ends_with("/c.html")).unwrap();
    assert_eq!((c.title.as_str(), c.author.as_str(), c.format), ("C", "Grace", Some(ContentFormat::Markdown)));
    assert!(c.content.contains("Third post.") && !c.content.contains("menu"), "{}", c.content);
    assert_eq!(seen.errors.len(), 1, "{:?}", seen.errors);
    assert!(
        seen.errors[0].location.ends_with("/big.html") && seen.errors[0].reason.contains("larger"),
        "{:?}",
        seen.errors
    );
    assert_eq!(first["crawl"], 1);
    assert!(!site.lock().unwrap().hits.contains_key("/private/x.html"), "robots.txt was not respected");

    // The site changes; a restart resumes from the committed position: only what changed comes.
    set(&site, "/b.html", page("B", "Ada", "Second post, revised.", &[]));
    site.lock().unwrap().pages.remove("/c.html");
    set(&site, "/a.html", page("A", "Ada", "First post.", &["/c.html", "/d.html"]));
    set(&site, "/d.html", page("D", "Ada", "Fourth post.", &[]));
    let (tx, rx) = crossbeam_channel::bounded(64);
    let handle = WebSource::spawn("web".into(), config(&base), state_dir.path().to_owned(), Some(first), tx).unwrap();
    let (seen, second) = until_position(&rx);
    handle.wait().unwrap();
    assert_eq!(
        sorted(seen.ops()),
        sorted(vec![
            format!("+{}", url("/a.html")),
            format!("+{}", url("/b.html")),
            format!("-{}", url("/c.html")),
            format!("+{}", url("/d.html"))
        ])
    );
    assert_eq!(second["crawl"], 2);
    assert_eq!(site.lock().unwrap().hits["/"], (1, 1), "the unchanged home page answered 304");

    // Nothing changed: a crawl of conditional requests gives no change at all.
    let (tx, rx) = crossbeam_channel::bounded(64);
    let handle =
        WebSource::spawn("web".into(), config(&base), state_dir.path().to_owned(), Some(second.clone()), tx).unwrap();
    let (seen, third) = until_position(&rx);
    handle.wait().unwrap();
    assert!(seen.changes.is_empty(), "{:?}", seen.ops());
    assert_eq!(third["crawl"], 3);
    let hits = site.lock().unwrap().hits.clone();
    assert_eq!(hits["/d.html"], (1, 1));
    assert_eq!(hits["/b.html"], (2, 1));

    // A damaged state file: the crawl starts afresh (every page again), it does not fail.
    std::fs::write(state_dir.path().join(third["state"].as_str().unwrap()), b"{broken").unwrap();
    let (tx, rx) = crossbeam_channel::bounded(64);
    let handle = WebSource::spawn("web".into(), config(&base), state_dir.path().to_owned(), Some(third), tx).unwrap();
    let (seen, fresh) = until_position(&rx);
    handle.wait().unwrap();
    assert_eq!(seen.upserts().len(), 4);
    assert_eq!(fresh["crawl"], 1);

    // Bad configuration is fatal at spawn.
    let (tx, _rx) = crossbeam_channel::bounded(1);
    let bad = WebSourceConfig { seeds: vec!["not a url".into()], ..WebSourceConfig::default() };
    assert!(WebSource::spawn("web".into(), bad, state_dir.path().to_owned(), None, tx).is_err());
}

#[test]
fn follows_a_sitemap_and_recrawls_on_schedule() {
    let site: Shared = Arc::default();
    set(&site, "/orphan.html", page("Orphan", "Ada", "Nobody links here.", &["/linked.html"]));
    set(&site, "/linked.html", page("Linked", "Ada", "Linked from the orphan.", &[]));
    let base = start(site.clone());
    set(
        &site,
        "/sitemap.xml",
        format!(
            r#"<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>{base}/orphan.html</loc></url></urlset>"#
        ),
    );
    let state_dir = tempfile::tempdir().unwrap();
    let config = WebSourceConfig {
        seeds: Vec::new(),
        sitemap: Some(format!("{base}/sitemap.xml")),
        max_depth: 1,
        recrawl: Duration::from_millis(50),
        ..config(&base)
    };
    let (tx, rx) = crossbeam_channel::bounded(64);
    let handle = WebSource::spawn("web".into(), config, state_dir.path().to_owned(), None, tx).unwrap();
    let (seen, _) = until_position(&rx);
    assert_eq!(seen.upserts().len(), 2, "{:?}", seen.ops());
    let (seen, _) = until_position(&rx);
    assert!(seen.changes.is_empty(), "{:?}", seen.ops());
    set(&site, "/linked.html", page("Linked", "Ada", "Edited.", &[]));
    let (seen, position) = until_position(&rx);
    assert_eq!(seen.ops(), [format!("+{base}/linked.html")]);
    assert!(position["crawl"].as_u64().unwrap() >= 3);
    handle.stop();
}

/// While a crawl runs, its lag is the pages it has queued and not fetched;
/// once it has sent its changes, none.
#[test]
fn a_crawl_reports_the_pages_it_has_queued() {
    use twinflow_schemas::api::LagUnit;
    let site: Shared = Arc::default();
    let links: Vec<String> = (0..20).map(|i| format!("/p{i}.html")).collect();
    let refs: Vec<&str> = links.iter().map(String::as_str).collect();
    set(&site, "/", page("Home", "Ada", "Welcome.", &refs));
    for link in &links {
        set(&site, link, page(link, "Ada", "A post.", &[]));
    }
    let base = start(site.clone());
    let state_dir = tempfile::tempdir().unwrap();
    // 20 requests a second: the crawl takes about a second.
    let config = WebSourceConfig { rate_per_host: 20.0, ..config(&base) };
    let (tx, rx) = crossbeam_channel::bounded(64);
    let handle = WebSource::spawn("web".into(), config, state_dir.path().to_owned(), None, tx).unwrap();
    let lag = handle.lag();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut most = 0;
    while most < 10 {
        assert!(std::time::Instant::now() < deadline, "no queue of pages seen (last {:?})", lag.get());
        if let Some(measured) = lag.get() {
            assert_eq!(measured.unit, LagUnit::Pages);
            most = most.max(measured.behind);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(most <= 20, "at most the linked pages are queued: {most}");
    let (seen, _) = until_position(&rx);
    assert_eq!(seen.upserts().len(), 21, "{:?}", seen.ops());
    assert_eq!(lag.get().map(|l| l.behind), Some(0), "a finished crawl has nothing queued");
    handle.stop();
}

/// A redirect is a link like any other: followed on the allowed hosts,
/// checked against robots.txt, and never off the hosts (here `localhost`,
/// the same server under a name that is not the seed's host).
#[test]
fn redirects_stay_inside_the_allowed_hosts_and_robots() {
    let site: Shared = Arc::default();
    site.lock().unwrap().robots = "User-agent: *\nDisallow: /private/\n".into();
    let base = start(site.clone());
    let port = base.rsplit(':').next().unwrap().to_owned();
    set(&site, "/", page("Home", "Ada", "Welcome.", &["/moved.html", "/away.html", "/sneaky.html"]));
    set(&site, "/a.html", page("A", "Ada", "First post.", &[]));
    set(&site, "/secret.html", page("Secret", "Ada", "Off the crawl.", &[]));
    set(&site, "/private/x.html", page("X", "Ada", "Disallowed.", &[]));
    {
        let mut site = site.lock().unwrap();
        site.redirects.insert("/moved.html".into(), "/a.html".into());
        site.redirects.insert("/away.html".into(), format!("http://localhost:{port}/secret.html"));
        site.redirects.insert("/sneaky.html".into(), "/private/x.html".into());
    }
    let state_dir = tempfile::tempdir().unwrap();
    let (tx, rx) = crossbeam_channel::bounded(64);
    let handle = WebSource::spawn("web".into(), config(&base), state_dir.path().to_owned(), None, tx).unwrap();
    let (seen, _) = until_position(&rx);
    handle.wait().unwrap();
    let url = |p: &str| format!("{base}{p}");
    assert_eq!(sorted(seen.ops()), sorted(vec![format!("+{}", url("/")), format!("+{}", url("/a.html"))]));
    let hits = site.lock().unwrap().hits.clone();
    assert!(!hits.contains_key("/secret.html"), "followed a redirect off the allowed hosts: {hits:?}");
    assert!(!hits.contains_key("/private/x.html"), "followed a redirect robots.txt forbids: {hits:?}");
    assert_eq!(hits.get("/a.html").map(|h| h.0), Some(1));
}
