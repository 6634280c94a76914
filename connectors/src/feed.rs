//! RSS and Atom feeds (and JSON Feed), parsed with `feed-rs`: the usual way
//! to follow a blog, a Substack or a Medium author. Every `interval` the
//! feed is fetched with a conditional GET (ETag, Last-Modified: an
//! unchanged feed costs a 304 and nothing else); each entry is a document
//! (its link as `doc_id`, its content, else its summary, HTML made Markdown), upserted
//! when new or changed. Feeds list their newest entries only, so an entry
//! that leaves the feed is deleted only with `delete_missing`. The position
//! — the validators and each listed entry's hash — is committed with the
//! epoch of its changes, so a restart fetches again but sends nothing
//! already committed.

use std::collections::BTreeMap;
use std::io::Read;

use crossbeam_channel::Sender;
use reqwest::StatusCode;
use reqwest::blocking::Client;
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use twinflow_schemas::config::FeedSourceConfig;
use twinflow_schemas::{ContentFormat, Document, DocumentChange};

use crate::handle::{Halt, Outbox};
use crate::{Error, Result, SourceEvent, SourceHandle, SourcePosition};

/// What the source remembers between fetches: the committed position.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct FeedState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_modified: Option<String>,
    /// `doc_id` → SHA-256 of the document, for the entries of the last fetch.
    #[serde(default)]
    entries: BTreeMap<String, String>,
}

/// A feed followed on a schedule.
#[derive(Debug)]
pub struct FeedSource;

impl FeedSource {
    /// Starts following `config.url`, from the committed `resume` position.
    pub fn spawn(
        name: String,
        config: FeedSourceConfig,
        resume: Option<SourcePosition>,
        tx: Sender<SourceEvent>,
    ) -> Result<SourceHandle> {
        let bad = |reason: String| Error::Config { source_name: name.clone(), reason };
        url::Url::parse(&config.url).map_err(|e| bad(format!("{:?} is not a URL: {e}", config.url)))?;
        let state: FeedState = match resume {
            Some(position) => serde_json::from_value(position).unwrap_or_else(|e| {
                tracing::warn!(source = %name, error = %e, "the committed feed position is unreadable: fetching afresh");
                FeedState::default()
            }),
            None => FeedState::default(),
        };
        let client = Client::builder()
            .user_agent(config.user_agent.clone())
            .timeout(config.timeout)
            .build()
            .map_err(|e| bad(format!("cannot build the HTTP client: {e}")))?;
        SourceHandle::spawn(name, tx, move |outbox| Follower { config, state, client }.run(&outbox))
    }
}

struct Follower {
    config: FeedSourceConfig,
    state: FeedState,
    client: Client,
}

impl Follower {
    fn run(mut self, outbox: &Outbox) -> Result<(), Halt> {
        loop {
            self.fetch(outbox)?;
            if self.config.interval.is_zero() {
                return Ok(());
            }
            outbox.sleep(self.config.interval)?;
        }
    }

    /// One conditional fetch; a failure is an ingest error, and the feed
    /// keeps its documents until the next fetch.
    fn fetch(&mut self, outbox: &Outbox) -> Result<(), Halt> {
        let url = self.config.url.clone();
        let mut request = self.client.get(&url);
        if let Some(etag) = &self.state.etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        if let Some(modified) = &self.state.last_modified {
            request = request.header(IF_MODIFIED_SINCE, modified);
        }
        let response = match request.send() {
            Ok(response) => response,
            Err(e) => return outbox.error(url, format!("cannot fetch the feed: {e}")),
        };
        match response.status() {
            StatusCode::NOT_MODIFIED => return Ok(()),
            status if !status.is_success() => return outbox.error(url, format!("the feed answered {status}")),
            _ => {}
        }
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (etag, last_modified) = (header(ETAG), header(LAST_MODIFIED));
        let limit = self.config.max_bytes.as_u64();
        let mut body = Vec::new();
        if let Err(e) = response.take(limit + 1).read_to_end(&mut body) {
            return outbox.error(url, format!("cannot read the feed: {e}"));
        }
        if body.len() as u64 > limit {
            return outbox.error(url, format!("the feed is larger than max_bytes ({})", self.config.max_bytes));
        }
        let feed = match feed_rs::parser::parse(body.as_slice()) {
            Ok(feed) => feed,
            Err(e) => return outbox.error(url, format!("not an RSS, Atom or JSON feed: {e}")),
        };
        let documents = self.documents(outbox.name(), &feed);
        let mut next = FeedState { etag, last_modified, entries: BTreeMap::new() };
        let mut changes = Vec::new();
        for document in documents {
            let hash = hash_of(&document);
            if self.state.entries.get(&document.doc_id) != Some(&hash) {
                changes.push(DocumentChange::Upsert(document.clone()));
            }
            next.entries.insert(document.doc_id, hash);
        }
        if self.config.delete_missing {
            for gone in self.state.entries.keys().filter(|id| !next.entries.contains_key(*id)) {
                changes.push(DocumentChange::Delete { doc_id: gone.clone() });
            }
        } else {
            // Entries that scrolled off stay (and are remembered, so they are not sent again).
            for (id, hash) in &self.state.entries {
                next.entries.entry(id.clone()).or_insert_with(|| hash.clone());
            }
        }
        if next == self.state {
            return Ok(());
        }
        let position = serde_json::to_value(&next).map_err(|e| {
            Halt::Fatal(Error::Config { source_name: outbox.name().to_owned(), reason: format!("its position: {e}") })
        })?;
        tracing::debug!(source = outbox.name(), changes = changes.len(), "feed fetched");
        outbox.changes_at(changes, position)?;
        self.state = next;
        Ok(())
    }

    /// The feed's entries as documents (an entry without a link or an id is skipped).
    fn documents(&self, source: &str, feed: &feed_rs::model::Feed) -> Vec<Document> {
        let feed_author = feed.authors.iter().find_map(|p| p.name.clone());
        feed.entries
            .iter()
            .filter_map(|entry| {
                let link = entry
                    .links
                    .iter()
                    .find(|l| l.rel.as_deref().is_none_or(|r| r == "alternate"))
                    .or_else(|| entry.links.first())
                    .map(|l| l.href.clone());
                let doc_id = match (&link, entry.id.trim()) {
                    (Some(link), _) => link.clone(),
                    (None, "") => return None,
                    (None, id) => format!("{}#{id}", self.config.url),
                };
                let (content, html) = match (&entry.content, &entry.summary) {
                    (Some(content), _) if content.body.as_deref().is_some_and(|b| !b.trim().is_empty()) => {
                        let html = content.content_type.essence().to_string().contains("html");
                        (content.body.clone().unwrap_or_default(), html)
                    }
                    (_, Some(summary)) => {
                        (summary.content.clone(), summary.content_type.essence().to_string().contains("html"))
                    }
                    _ => (String::new(), false),
                };
                let title = entry.title.as_ref().map(|t| t.content.trim().to_owned()).unwrap_or_default();
                let content = if content.trim().is_empty() { title.clone() } else { content };
                let author = match &self.config.author {
                    Some(author) => author.clone(),
                    None => entry
                        .authors
                        .iter()
                        .find_map(|p| p.name.clone())
                        .or_else(|| feed_author.clone())
                        .unwrap_or_default(),
                };
                Some(Document {
                    doc_id,
                    kind: self.config.kind,
                    author,
                    title,
                    url: link.unwrap_or_default(),
                    source: source.to_owned(),
                    format: Some(if html { ContentFormat::Markdown } else { ContentFormat::Text }),
                    fetched_at: None,
                    content: if html { crate::formats::html_to_markdown(&content) } else { content },
                })
            })
            .collect()
    }
}

/// SHA-256 of what makes an entry's document (not when it was fetched).
fn hash_of(document: &Document) -> String {
    let mut hasher = Sha256::new();
    for part in [&document.title, &document.author, &document.url, &document.content] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
