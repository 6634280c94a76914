//! The web crawler: pages reached from seeds (and a sitemap) within the
//! allowed hosts, to a depth limit, politely (robots.txt, a per-host rate),
//! re-crawled on a schedule with conditional requests.
//!
//! ```text
//!  seeds, sitemap <loc>s (depth 0) ─▶ frontier (breadth first) ─▶ allowed host? robots.txt allows?
//!    ─▶ wait for the host's turn ─▶ GET (If-None-Match / If-Modified-Since from the last crawl)
//!         304            ─▶ unchanged: no change; its stored links are followed
//!         200 text/html  ─▶ title, author, main content as Markdown, links ─▶ content hash changed? ─▶ upsert
//!         200 PDF/DOCX/EPUB (by type, else by name) ─▶ its text as Markdown (no links) ─▶ changed? ─▶ upsert
//!         3xx Location   ─▶ delete (a page crawled before); the target joins the frontier, so it passes
//!                           the same checks (a redirect off the allowed hosts is never followed)
//!         404 / 410      ─▶ delete (a page crawled before)
//!         other failure  ─▶ an ingest error; the page keeps its last version
//!  end of crawl ─▶ crawl state file (etags, hashes, links) ─▶ position {"state": file} with the last changes
//! ```
//!
//! The crawl state is a file in the source's state directory; the position
//! committed with the epoch names it, so a restart resumes from the last
//! committed crawl (a crash mid-crawl re-fetches, conditionally, what that
//! crawl had not committed; an unchanged page gives no change).

mod page;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use reqwest::StatusCode;
use reqwest::blocking::Client;
use reqwest::header::{CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use twinflow_schemas::api::LagUnit;
use twinflow_schemas::config::WebSourceConfig;
use twinflow_schemas::{ContentFormat, Document, DocumentChange};
use url::Url;

pub use page::{Page, parse as parse_page};

use crate::formats::Binary;
use crate::handle::{Halt, Outbox};
use crate::{Error, Result, SourceEvent, SourceHandle, SourcePosition};

/// Changes sent per event within a crawl.
const BATCH: usize = 32;
/// Crawl state files kept (the committed position may name one of the older ones).
const KEEP_STATES: usize = 3;

/// What the crawler remembers of a page between crawls.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct PageState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_modified: Option<String>,
    /// SHA-256 of what the document is made of (empty: fetched but not ingested).
    hash: String,
    links: Vec<String>,
}

/// The state after a crawl.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct CrawlState {
    crawl: u64,
    pages: BTreeMap<String, PageState>,
}

/// What one crawl did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CrawlStats {
    pub crawl: u64,
    /// Pages requested.
    pub fetched: usize,
    /// Answered 304 Not Modified.
    pub not_modified: usize,
    pub upserts: usize,
    pub deletes: usize,
    /// Fetched, but with the content of the last crawl.
    pub unchanged: usize,
    pub errors: usize,
    pub robots_disallowed: usize,
    /// Pages that redirected (the target is crawled as a page of its own, if allowed).
    pub redirects: usize,
    /// Redirects to a host outside the allowed ones (not followed).
    pub redirects_refused: usize,
}

/// The crawler; see the module docs.
#[derive(Debug)]
pub struct WebSource;

impl WebSource {
    /// Validates `config`, loads the crawl state `resume` names (from
    /// `state_dir`), and starts crawling on a thread. Bad seeds or an
    /// unusable state directory are fatal here.
    pub fn spawn(
        name: String,
        config: WebSourceConfig,
        state_dir: PathBuf,
        resume: Option<SourcePosition>,
        tx: Sender<SourceEvent>,
    ) -> Result<SourceHandle> {
        let crawler = Crawler::open(&name, config, state_dir, resume)?;
        SourceHandle::spawn(name, tx, move |outbox| crawler.run(&outbox))
    }
}

struct Crawler {
    config: WebSourceConfig,
    seeds: Vec<Url>,
    sitemap: Option<Url>,
    hosts: HashSet<String>,
    state_dir: PathBuf,
    state: CrawlState,
    client: Client,
    robots: HashMap<String, Option<texting_robots::Robot>>,
    next_turn: HashMap<String, Instant>,
}

fn bad_config(name: &str, reason: String) -> Error {
    Error::Config { source_name: name.to_owned(), reason }
}

impl Crawler {
    fn open(name: &str, config: WebSourceConfig, state_dir: PathBuf, resume: Option<SourcePosition>) -> Result<Self> {
        let parse = |u: &str| Url::parse(u).map_err(|e| bad_config(name, format!("{u:?} is not a URL: {e}")));
        let seeds: Vec<Url> = config.seeds.iter().map(|s| parse(s)).collect::<Result<_>>()?;
        let sitemap = config.sitemap.as_deref().map(parse).transpose()?;
        if seeds.is_empty() && sitemap.is_none() {
            return Err(bad_config(name, "a web source needs seeds or a sitemap".into()));
        }
        if !(config.rate_per_host > 0.0) {
            return Err(bad_config(name, "rate_per_host must be above 0".into()));
        }
        let mut hosts: HashSet<String> = config.allowed_domains.iter().map(|d| d.to_ascii_lowercase()).collect();
        if hosts.is_empty() {
            hosts.extend(seeds.iter().chain(&sitemap).filter_map(|u| u.host_str().map(str::to_owned)));
        }
        std::fs::create_dir_all(&state_dir).map_err(|e| Error::io(&state_dir, e))?;
        let state = resume.and_then(|position| load_state(&state_dir, &position)).unwrap_or_default();
        // Redirects are never followed blindly: a page's redirect becomes a link (checked against the
        // allowed hosts and robots.txt like any other), robots.txt and sitemaps follow theirs within the hosts.
        let client = Client::builder()
            .user_agent(config.user_agent.clone())
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| bad_config(name, format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            config,
            seeds,
            sitemap,
            hosts,
            state_dir,
            state,
            client,
            robots: HashMap::new(),
            next_turn: HashMap::new(),
        })
    }

    fn run(mut self, outbox: &Outbox) -> Result<(), Halt> {
        loop {
            let started = Instant::now();
            let stats = self.crawl(outbox)?;
            tracing::info!(source = outbox.name(), ?stats, seconds = started.elapsed().as_secs_f64(), "crawl done");
            if self.config.recrawl.is_zero() {
                return Ok(());
            }
            outbox.sleep(self.config.recrawl.saturating_sub(started.elapsed()))?;
        }
    }

    fn allowed_host(&self, url: &Url) -> bool {
        url.host_str().is_some_and(|h| self.hosts.contains(&h.to_ascii_lowercase()))
    }

    /// One crawl: every reachable page once, then the new state and position.
    fn crawl(&mut self, outbox: &Outbox) -> Result<CrawlStats, Halt> {
        let crawl = self.state.crawl + 1;
        let mut stats = CrawlStats { crawl, ..CrawlStats::default() };
        self.robots.clear();
        let mut frontier: VecDeque<(Url, usize)> = self.seeds.iter().map(|u| (u.clone(), 0)).collect();
        if let Some(sitemap) = self.sitemap.clone() {
            for url in self.sitemap_pages(&sitemap, outbox)? {
                frontier.push_back((url, 0));
            }
        }
        // Pages of the last crawl are checked again even if nothing links to them any more.
        let known: Vec<Url> = self.state.pages.keys().filter_map(|k| Url::parse(k).ok()).collect();
        let mut seen: HashSet<String> = HashSet::new();
        let mut pages: BTreeMap<String, PageState> = BTreeMap::new();
        let mut pending: Vec<DocumentChange> = Vec::new();
        let mut known_queued = false;
        loop {
            // Queued: the frontier, and the last crawl's pages not yet queued again.
            let queued = frontier.len() + if known_queued { 0 } else { known.len() };
            outbox.report_lag(queued as u64, LagUnit::Pages);
            let Some((url, depth)) = frontier.pop_front() else {
                if known_queued {
                    break;
                }
                known_queued = true;
                frontier.extend(known.iter().map(|u| (u.clone(), self.config.max_depth)));
                continue;
            };
            if outbox.stopping() {
                return Err(Halt::Stopped);
            }
            let key = url.as_str().to_owned();
            if seen.contains(&key) || !self.allowed_host(&url) {
                continue;
            }
            if seen.len() >= self.config.max_pages {
                break;
            }
            seen.insert(key.clone());
            if self.config.respect_robots && !self.robots_allow(&url) {
                stats.robots_disallowed += 1;
                continue;
            }
            self.wait_turn(&url, outbox)?;
            let previous = self.state.pages.get(&key).cloned();
            stats.fetched += 1;
            let links = match self.fetch(&url, previous.as_ref()) {
                Fetched::NotModified => {
                    stats.not_modified += 1;
                    let previous = previous.unwrap_or_default();
                    let links = previous.links.clone();
                    pages.insert(key, previous);
                    links
                }
                Fetched::Page { html, etag, last_modified } => {
                    let page = page::parse(&html, &url);
                    let document = (!page.noindex).then(|| self.document(&url, &page));
                    let hash = document.as_ref().map(document_hash).unwrap_or_default();
                    match document {
                        Some(document) if previous.as_ref().is_none_or(|p| p.hash != hash) => {
                            stats.upserts += 1;
                            pending.push(DocumentChange::Upsert(document));
                        }
                        Some(_) => stats.unchanged += 1,
                        None if previous.as_ref().is_some_and(|p| !p.hash.is_empty()) => {
                            stats.deletes += 1;
                            pending.push(DocumentChange::Delete { doc_id: key.clone() });
                        }
                        None => {}
                    }
                    let links: Vec<String> =
                        if page.nofollow { Vec::new() } else { page.links.iter().map(|l| l.to_string()).collect() };
                    pages.insert(key, PageState { etag, last_modified, hash, links: links.clone() });
                    links
                }
                Fetched::Document { extracted, etag, last_modified } => {
                    let name = url.path_segments().and_then(|mut s| s.next_back()).unwrap_or_default().to_owned();
                    let document = Document {
                        doc_id: key.clone(),
                        kind: self.config.kind,
                        author: self.config.author.clone(),
                        title: extracted.title.unwrap_or(name),
                        url: key.clone(),
                        source: String::new(),
                        format: Some(ContentFormat::Markdown),
                        fetched_at: None,
                        content: extracted.markdown,
                    };
                    let hash = document_hash(&document);
                    if previous.as_ref().is_none_or(|p| p.hash != hash) {
                        stats.upserts += 1;
                        pending.push(DocumentChange::Upsert(document));
                    } else {
                        stats.unchanged += 1;
                    }
                    pages.insert(key, PageState { etag, last_modified, hash, links: Vec::new() });
                    Vec::new()
                }
                Fetched::Redirect(target) => {
                    stats.redirects += 1;
                    if previous.is_some_and(|p| !p.hash.is_empty()) {
                        stats.deletes += 1;
                        pending.push(DocumentChange::Delete { doc_id: key });
                    }
                    if !self.allowed_host(&target) {
                        stats.redirects_refused += 1;
                        tracing::debug!(from = %url, to = %target, "redirect to a host outside the crawl: not followed");
                    } else if !seen.contains(target.as_str()) {
                        frontier.push_front((target, depth));
                    }
                    Vec::new()
                }
                Fetched::Gone => {
                    if previous.is_some_and(|p| !p.hash.is_empty()) {
                        stats.deletes += 1;
                        pending.push(DocumentChange::Delete { doc_id: key });
                    }
                    Vec::new()
                }
                Fetched::Refused(reason) => {
                    stats.errors += 1;
                    outbox.error(key.clone(), reason)?;
                    if let Some(previous) = previous {
                        pages.insert(key, previous);
                    }
                    Vec::new()
                }
            };
            if depth < self.config.max_depth {
                for link in links.iter().filter_map(|l| Url::parse(l).ok()) {
                    if self.allowed_host(&link) && !seen.contains(link.as_str()) {
                        frontier.push_back((link, depth + 1));
                    }
                }
            }
            if pending.len() >= BATCH {
                outbox.changes(std::mem::take(&mut pending))?;
            }
        }
        // Pages past `max_pages` keep their last state.
        for (key, state) in &self.state.pages {
            if !seen.contains(key) {
                pages.entry(key.clone()).or_insert_with(|| state.clone());
            }
        }
        self.state = CrawlState { crawl, pages };
        let file = save_state(&self.state_dir, &self.state).map_err(Halt::Fatal)?;
        let position = serde_json::json!({ "state": file, "crawl": crawl, "pages": self.state.pages.len() });
        outbox.report_lag(0, LagUnit::Pages);
        outbox.changes_at(pending, position)?;
        Ok(stats)
    }

    fn document(&self, url: &Url, page: &Page) -> Document {
        Document {
            doc_id: url.to_string(),
            kind: self.config.kind,
            author: page.author.clone().unwrap_or_else(|| self.config.author.clone()),
            title: page.title.clone(),
            url: url.to_string(),
            source: String::new(),
            format: Some(ContentFormat::Markdown),
            fetched_at: None,
            content: crate::formats::html_to_markdown(&page.main_html),
        }
    }

    /// The page URLs of the sitemap (one level of sitemap index followed).
    fn sitemap_pages(&mut self, sitemap: &Url, outbox: &Outbox) -> Result<Vec<Url>, Halt> {
        let mut pages = Vec::new();
        let mut sitemaps = vec![sitemap.clone()];
        let mut index_read = false;
        while let Some(map) = sitemaps.pop() {
            self.wait_turn(&map, outbox)?;
            let xml = match self.get_text(&map) {
                Ok(xml) => xml,
                Err(reason) => {
                    outbox.error(map.to_string(), format!("sitemap: {reason}"))?;
                    continue;
                }
            };
            let locations = page::sitemap_locations(&xml).into_iter().filter_map(|l| Url::parse(&l).ok());
            if page::is_sitemap_index(&xml) && !index_read {
                index_read = true;
                sitemaps.extend(locations);
            } else {
                pages.extend(locations);
            }
        }
        Ok(pages)
    }

    /// GET `url`, following up to 5 redirects that stay on the allowed hosts.
    fn get_within(&self, url: &Url) -> std::result::Result<reqwest::blocking::Response, String> {
        let mut url = url.clone();
        for _ in 0..=5 {
            let response = self.client.get(url.clone()).send().map_err(|e| e.to_string())?;
            let Some(target) = redirect_target(&url, &response) else { return Ok(response) };
            if !self.allowed_host(&target) {
                return Err(format!("redirect to {target}, outside the crawl's hosts"));
            }
            url = target;
        }
        Err("more than 5 redirects".into())
    }

    fn get_text(&self, url: &Url) -> std::result::Result<String, String> {
        let response = self.get_within(url)?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        read_bytes(response, self.config.max_page.as_u64()).map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// Whether robots.txt of the URL's host lets this user agent fetch it
    /// (fetched once per crawl; a missing file allows everything, an
    /// unreachable one (5xx, network) disallows the host for this crawl).
    fn robots_allow(&mut self, url: &Url) -> bool {
        let origin = url.origin().ascii_serialization();
        if !self.robots.contains_key(&origin) {
            let robots_url = format!("{origin}/robots.txt");
            let robot = match Url::parse(&robots_url).map_err(|e| e.to_string()).and_then(|u| self.get_within(&u)) {
                Ok(r) if r.status().is_success() => {
                    let body =
                        read_bytes(r, 512 * 1024).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
                    texting_robots::Robot::new(&self.config.user_agent, body.as_bytes()).ok()
                }
                Ok(r) if r.status().is_client_error() => None,
                _ => Some(
                    texting_robots::Robot::new(&self.config.user_agent, b"User-agent: *\nDisallow: /\n")
                        .expect("a valid robots.txt"),
                ),
            };
            if let Some(delay) = robot.as_ref().and_then(|r| r.delay) {
                tracing::debug!(%origin, delay, "robots.txt crawl-delay");
            }
            self.robots.insert(origin.clone(), robot);
        }
        self.robots.get(&origin).and_then(Option::as_ref).is_none_or(|robot| robot.allowed(url.as_str()))
    }

    /// Sleeps until the host may be asked again (rate limit, robots.txt crawl-delay).
    fn wait_turn(&mut self, url: &Url, outbox: &Outbox) -> Result<(), Halt> {
        let origin = url.origin().ascii_serialization();
        let mut gap = Duration::from_secs_f64(1.0 / self.config.rate_per_host);
        if let Some(delay) = self.robots.get(&origin).and_then(Option::as_ref).and_then(|r| r.delay) {
            gap = gap.max(Duration::from_secs_f32(delay.clamp(0.0, 60.0)));
        }
        let now = Instant::now();
        if let Some(at) = self.next_turn.get(&origin).copied().filter(|at| *at > now) {
            outbox.sleep(at - now)?;
        }
        self.next_turn.insert(origin, Instant::now() + gap);
        Ok(())
    }

    fn fetch(&self, url: &Url, previous: Option<&PageState>) -> Fetched {
        let mut request = self.client.get(url.clone());
        if let Some(previous) = previous.filter(|p| !p.hash.is_empty() || p.etag.is_some()) {
            if let Some(etag) = &previous.etag {
                request = request.header(IF_NONE_MATCH, etag);
            }
            if let Some(modified) = &previous.last_modified {
                request = request.header(IF_MODIFIED_SINCE, modified);
            }
        }
        let response = match request.send() {
            Ok(response) => response,
            Err(e) => return Fetched::Refused(format!("fetch failed: {e}")),
        };
        if let Some(target) = redirect_target(url, &response) {
            return Fetched::Redirect(target);
        }
        match response.status() {
            StatusCode::NOT_MODIFIED => return Fetched::NotModified,
            StatusCode::NOT_FOUND | StatusCode::GONE => return Fetched::Gone,
            status if !status.is_success() => return Fetched::Refused(format!("HTTP {status}")),
            _ => {}
        }
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (etag, last_modified) = (header(ETAG), header(LAST_MODIFIED));
        let content_type = header(CONTENT_TYPE).unwrap_or_default().to_ascii_lowercase();
        // A PDF, DOCX or EPUB, by its type (or, served as anything but HTML, by its name).
        let extension = url.path().rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
        let binary = Binary::of_content_type(&content_type)
            .or_else(|| (!content_type.contains("html")).then(|| Binary::of_extension(extension)).flatten());
        if let Some(binary) = binary {
            return match read_bytes(response, self.config.max_page.as_u64()) {
                Ok(bytes) => match crate::formats::extract(binary, &bytes) {
                    Ok(extracted) => Fetched::Document { extracted, etag, last_modified },
                    Err(reason) => Fetched::Refused(reason),
                },
                Err(reason) => Fetched::Refused(reason),
            };
        }
        if !content_type.is_empty() && !content_type.contains("html") {
            return Fetched::Refused(format!("not an HTML page ({content_type})"));
        }
        match read_bytes(response, self.config.max_page.as_u64()) {
            Ok(bytes) => Fetched::Page { html: String::from_utf8_lossy(&bytes).into_owned(), etag, last_modified },
            Err(reason) => Fetched::Refused(reason),
        }
    }
}

enum Fetched {
    NotModified,
    Page {
        html: String,
        etag: Option<String>,
        last_modified: Option<String>,
    },
    /// A PDF, DOCX or EPUB, read as Markdown.
    Document {
        extracted: crate::formats::Extracted,
        etag: Option<String>,
        last_modified: Option<String>,
    },
    /// A 3xx with a `Location`: the URL it points to (resolved against the page's).
    Redirect(Url),
    Gone,
    Refused(String),
}

/// Where a redirect answer points, if it is one.
fn redirect_target(url: &Url, response: &reqwest::blocking::Response) -> Option<Url> {
    if !response.status().is_redirection() || response.status() == StatusCode::NOT_MODIFIED {
        return None;
    }
    let location = response.headers().get(reqwest::header::LOCATION)?.to_str().ok()?;
    url.join(location).ok().filter(|u| matches!(u.scheme(), "http" | "https"))
}

/// The body, at most `limit` bytes (more is an error).
fn read_bytes(response: reqwest::blocking::Response, limit: u64) -> std::result::Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    response.take(limit + 1).read_to_end(&mut bytes).map_err(|e| format!("reading the body: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!("the page is larger than {limit} bytes"));
    }
    Ok(bytes)
}

fn document_hash(document: &Document) -> String {
    let mut hasher = Sha256::new();
    for part in [&document.title, &document.author, &document.content] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The crawl state the committed `position` names, if it can be read.
fn load_state(dir: &Path, position: &SourcePosition) -> Option<CrawlState> {
    let file = position.get("state")?.as_str()?;
    if file.contains('/') || file.contains('\\') {
        return None;
    }
    let path = dir.join(file);
    match std::fs::read(&path).map(|bytes| serde_json::from_slice::<CrawlState>(&bytes)) {
        Ok(Ok(state)) => Some(state),
        Ok(Err(e)) => {
            tracing::warn!(file = %path.display(), error = %e, "the crawl state is damaged; crawling afresh");
            None
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "the committed crawl state is missing; crawling afresh");
            None
        }
    }
}

/// Writes `crawl-<n>.json` durably (`twinflow_schemas::fs::write_atomic`:
/// temporary file, fsync, rename, fsync of the folder) and
/// removes all but the newest [`KEEP_STATES`]; returns its name.
fn save_state(dir: &Path, state: &CrawlState) -> Result<String> {
    let name = format!("crawl-{:08}.json", state.crawl);
    let path = dir.join(&name);
    let bytes = serde_json::to_vec(state).map_err(|e| Error::io(&path, std::io::Error::other(e)))?;
    twinflow_schemas::fs::write_atomic(&path, &bytes).map_err(|e| Error::io(&path, e))?;
    let mut old: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("crawl-") && n.ends_with(".json"))
        })
        .collect();
    old.sort();
    for stale in old.iter().rev().skip(KEEP_STATES) {
        let _ = std::fs::remove_file(stale);
    }
    Ok(name)
}
