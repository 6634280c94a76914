//! The feed source against a blog's feed served on loopback (a small RSS
//! 2.0 and an Atom feed written here, as a blog engine writes them):
//! entries as documents, conditional requests, edits, new entries, entries
//! that leave the feed (deleted only with `delete_missing`), and a restart
//! from the committed position that sends nothing again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use twinflow_connectors::{FeedSource, SourceEvent};
use twinflow_schemas::config::FeedSourceConfig;
use twinflow_schemas::{ContentFormat, DocumentKind};

use crate::support::until_position;

/// The feed's text and version; (200s, 304s) served.
#[derive(Default)]
struct Blog {
    feed: String,
    version: u32,
    hits: (usize, usize),
}

type Shared = Arc<Mutex<Blog>>;

async fn serve(blog: axum::extract::State<Shared>, headers: HeaderMap) -> Response {
    let mut blog = blog.lock().unwrap();
    let etag = format!("\"v{}\"", blog.version);
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        blog.hits.1 += 1;
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    blog.hits.0 += 1;
    ([(header::ETAG, etag), (header::CONTENT_TYPE, "application/rss+xml".to_owned())], blog.feed.clone())
        .into_response()
}

/// Serves the blog on a free loopback port; returns its feed's URL.
fn start(blog: Shared) -> String {
    format!("{}/feed.xml", crate::support::serve_loopback(axum::Router::new().fallback(serve).with_state(blog)))
}

fn rss(items: &[(&str, &str, &str)]) -> String {
    let items: String = items
        .iter()
        .map(|(slug, title, body)| {
            format!(
                "<item><title>{title}</title><link>https://blog.example/{slug}</link>\
                 <guid>https://blog.example/{slug}</guid><dc:creator>Ada Lovelace</dc:creator>\
                 <pubDate>Mon, 06 Sep 2021 16:45:00 +0000</pubDate>\
                 <description>A summary.</description>\
                 <content:encoded><![CDATA[<p>{body}</p><p>More of it, <em>emphasised</em>.</p>]]></content:encoded></item>"
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/" xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel><title>Notes</title><link>https://blog.example/</link><description>A blog</description>{items}</channel></rss>"#
    )
}

fn set(blog: &Shared, feed: String) {
    let mut blog = blog.lock().unwrap();
    blog.feed = feed;
    blog.version += 1;
}

fn config(url: &str, delete_missing: bool) -> FeedSourceConfig {
    FeedSourceConfig {
        url: url.to_owned(),
        interval: Duration::from_millis(100),
        delete_missing,
        ..FeedSourceConfig::default()
    }
}

#[test]
fn entries_become_documents_and_follow_the_feed() {
    let blog = Shared::default();
    set(&blog, rss(&[("engines", "On engines", "The analytical engine weaves."), ("notes", "Notes", "Note G.")]));
    let url = start(blog.clone());
    let (tx, rx) = crossbeam_channel::bounded(16);
    let handle = FeedSource::spawn("feed-0".into(), config(&url, true), None, tx).unwrap();
    let (seen, _) = until_position(&rx);
    assert_eq!(seen.ops(), ["+https://blog.example/engines", "+https://blog.example/notes"]);
    let engines = seen.upserts()[0];
    assert_eq!(engines.title, "On engines");
    assert_eq!(engines.author, "Ada Lovelace");
    assert_eq!(engines.url, "https://blog.example/engines");
    assert_eq!(engines.kind, DocumentKind::Post);
    assert_eq!(engines.format, Some(ContentFormat::Markdown), "the entry's HTML is made Markdown");
    assert!(engines.content.contains("The analytical engine weaves."), "{}", engines.content);

    // Unchanged: conditional requests answered 304, nothing sent.
    std::thread::sleep(Duration::from_millis(400));
    assert!(rx.try_recv().is_err(), "an unchanged feed sends nothing");
    assert!(blog.lock().unwrap().hits.1 >= 2, "later fetches are conditional");

    // An edit, a new entry, and one that left the feed.
    set(
        &blog,
        rss(&[
            ("engines", "On engines", "The engine weaves algebraic patterns."),
            ("bernoulli", "Bernoulli", "Numbers."),
        ]),
    );
    let (seen, position) = until_position(&rx);
    let mut ops = seen.ops();
    ops.sort();
    assert_eq!(
        ops,
        ["+https://blog.example/bernoulli", "+https://blog.example/engines", "-https://blog.example/notes"]
    );
    handle.stop();

    // A restart from the committed position sends nothing it already sent.
    let (tx, rx) = crossbeam_channel::bounded(16);
    let handle = FeedSource::spawn("feed-0".into(), config(&url, true), Some(position), tx).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert!(rx.try_recv().is_err(), "nothing is sent again");
    handle.stop();
}

#[test]
fn without_delete_missing_entries_that_scroll_off_stay_and_atom_reads_too() {
    let blog = Shared::default();
    let atom = |entries: &[(&str, &str)]| -> String {
        let entries: String = entries
            .iter()
            .map(|(slug, summary)| {
                format!(
                    "<entry><title>{slug}</title><id>urn:blog:{slug}</id><link rel=\"alternate\" \
                     href=\"https://blog.example/{slug}\"/><updated>2021-09-06T16:45:00Z</updated>\
                     <summary>{summary}</summary></entry>"
                )
            })
            .collect();
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>Notes</title>
<id>urn:blog</id><updated>2021-09-06T16:45:00Z</updated><author><name>Charles Babbage</name></author>{entries}</feed>"#
        )
    };
    set(&blog, atom(&[("one", "The first."), ("two", "The second.")]));
    let url = start(blog.clone());
    let (tx, rx) = crossbeam_channel::bounded(16);
    let handle = FeedSource::spawn("feed-1".into(), config(&url, false), None, tx).unwrap();
    let (seen, _) = until_position(&rx);
    assert_eq!(seen.ops(), ["+https://blog.example/one", "+https://blog.example/two"]);
    assert_eq!(seen.upserts()[0].author, "Charles Babbage", "the feed's author when the entry has none");
    assert_eq!(seen.upserts()[0].content, "The first.");
    set(&blog, atom(&[("three", "The third."), ("two", "The second.")]));
    let (seen, _) = until_position(&rx);
    assert_eq!(seen.ops(), ["+https://blog.example/three"], "`one` scrolled off: kept, not deleted");
    handle.stop();
    let bad = FeedSource::spawn("feed-2".into(), config("not a url", false), None, crossbeam_channel::bounded(1).0);
    assert!(bad.is_err());
    // A broken feed is an ingest error, not the end of the source.
    set(&blog, "<rss><channel><item>".into());
    let (tx, rx) = crossbeam_channel::bounded(16);
    let handle = FeedSource::spawn("feed-3".into(), config(&url, false), None, tx).unwrap();
    match rx.recv_timeout(Duration::from_secs(10)).unwrap() {
        SourceEvent::Error(error) => assert!(error.reason.contains("feed"), "{}", error.reason),
        other => panic!("expected an ingest error, got {other:?}"),
    }
    handle.stop();
}
