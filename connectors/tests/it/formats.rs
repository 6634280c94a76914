//! PDF, DOCX and EPUB files made by each format's reference library
//! (fpdf2, python-docx, EbookLib: `formats/make_documents.py`; `.ci/run`
//! installs them, and a missing one fails the test unless
//! `TWINFLOW_SKIP_PYTHON_DOCUMENTS=1`), read as Markdown directly and
//! through a watched directory, where an unreadable one is an ingest error.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use twinflow_connectors::formats::{Binary, extract};
use twinflow_connectors::{IngestError, SourceEvent, WatchSource};
use twinflow_schemas::config::WatchSourceConfig;
use twinflow_schemas::{ContentFormat, Document, DocumentChange};

/// Writes the documents into `dir`; false when the libraries are missing (and that is allowed).
fn make_documents(dir: &Path) -> bool {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/formats/make_documents.py");
    let out = Command::new("python3").arg(&script).arg(dir).output().expect("python3 runs");
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("ModuleNotFoundError"), "make_documents.py failed: {stderr}");
        twinflow_schemas::testing::tool_missing(
            "python_documents",
            "pip install python-docx==1.2.0 EbookLib==0.20 fpdf2==2.8.9",
        );
        return false;
    }
    true
}

/// Sorts an event's upserts and errors into `documents` and `errors`.
fn take(event: SourceEvent, documents: &mut Vec<Document>, errors: &mut Vec<IngestError>) {
    match event {
        SourceEvent::Changes { changes, .. } => documents.extend(changes.into_iter().filter_map(|c| match c {
            DocumentChange::Upsert(doc) => Some(doc),
            DocumentChange::Delete { .. } => None,
        })),
        SourceEvent::Error(error) => errors.push(error),
    }
}

#[test]
fn pdf_docx_and_epub_read_as_markdown() {
    let dir = tempfile::tempdir().unwrap();
    if !make_documents(dir.path()) {
        return;
    }
    let read = |name: &str, format| extract(format, &std::fs::read(dir.path().join(name)).unwrap()).unwrap();

    let pdf = read("harbours.pdf", Binary::Pdf);
    assert_eq!(pdf.title.as_deref(), Some("Harbours at Dawn"));
    let first = pdf.markdown.find("lighthouses along the northern coast").expect("page one's text");
    let second = pdf.markdown.find("orchards and the apple harvest").expect("page two's text");
    assert!(first < second, "pages in order: {}", pdf.markdown);
    assert_eq!(
        pdf.markdown[first..second].matches(twinflow_connectors::formats::PAGE_BREAK).count(),
        1,
        "one page break between the pages: {:?}",
        pdf.markdown
    );
    assert!(pdf.markdown[first..second].contains("\n\u{c}\n"), "the break is a line of its own: {:?}", pdf.markdown);

    let docx = read("rivers.docx", Binary::Docx);
    assert_eq!(docx.title.as_deref(), Some("Notes on Rivers"));
    for line in [
        "# Notes on Rivers",
        "Rivers flood each spring and carry silt to the delta.",
        "## Bridges",
        "- Stone bridges outlast wooden ones.",
        "- Iron bridges rust near the sea.",
        "| river | length |",
        "| Danube | 2850 km |",
    ] {
        assert!(docx.markdown.lines().any(|l| l == line), "{line:?} missing from:\n{}", docx.markdown);
    }

    let epub = read("canals.epub", Binary::Epub);
    assert_eq!(epub.title.as_deref(), Some("A Book of Canals"));
    let locks = epub.markdown.find("# Locks").expect("chapter one's heading");
    let tolls = epub.markdown.find("## Tolls").expect("chapter two's heading");
    assert!(locks < tolls, "chapters in spine order:\n{}", epub.markdown);
    assert!(epub.markdown.contains("upper gate") && epub.markdown.contains("lower gate"), "{}", epub.markdown);
    assert!(
        epub.markdown.contains("toll = weight * rate\nif weight > 40:\n    toll += surcharge"),
        "code kept verbatim:\n{}",
        epub.markdown
    );
}

#[test]
fn a_watched_directory_reads_documents_and_refuses_broken_ones() {
    let dir = tempfile::tempdir().unwrap();
    if !make_documents(dir.path()) {
        return;
    }
    // A PDF cut in half, and a DOCX that is not a ZIP.
    let pdf = std::fs::read(dir.path().join("harbours.pdf")).unwrap();
    std::fs::write(dir.path().join("broken.pdf"), &pdf[..pdf.len() / 2]).unwrap();
    std::fs::write(dir.path().join("broken.docx"), b"PK but not really").unwrap();
    let (tx, rx) = crossbeam_channel::bounded(16);
    let config = WatchSourceConfig { path: dir.path().to_owned(), ..Default::default() };
    let _source = WatchSource::spawn("watch-0".into(), config, tx).unwrap();
    let mut documents = Vec::new();
    let mut errors = Vec::new();
    while documents.len() < 3 || errors.len() < 2 {
        let event = rx.recv_timeout(Duration::from_secs(20)).expect("the scan's documents and errors");
        take(event, &mut documents, &mut errors);
    }
    documents.sort_by(|a, b| a.doc_id.cmp(&b.doc_id));
    let ids: Vec<_> = documents.iter().map(|d| d.doc_id.as_str()).collect();
    assert_eq!(ids, ["file:canals.epub", "file:harbours.pdf", "file:rivers.docx"]);
    assert!(documents.iter().all(|d| d.format == Some(ContentFormat::Markdown)));
    let titles: Vec<_> = documents.iter().map(|d| d.title.as_str()).collect();
    assert_eq!(titles, ["A Book of Canals", "Harbours at Dawn", "Notes on Rivers"]);
    errors.sort_by(|a, b| a.location.cmp(&b.location));
    assert!(errors[0].location.ends_with("broken.docx") && errors[0].reason.contains("ZIP"), "{:?}", errors[0]);
    assert!(errors[1].location.ends_with("broken.pdf") && errors[1].reason.contains("PDF"), "{:?}", errors[1]);
}

#[test]
fn a_crawl_reads_linked_documents_by_their_type() {
    use axum::http::header::CONTENT_TYPE;
    use twinflow_connectors::WebSource;
    use twinflow_schemas::config::WebSourceConfig;

    let dir = tempfile::tempdir().unwrap();
    if !make_documents(dir.path()) {
        return;
    }
    let pdf = std::fs::read(dir.path().join("harbours.pdf")).unwrap();
    let epub = std::fs::read(dir.path().join("canals.epub")).unwrap();
    let index = r#"<html><head><title>Reading</title></head><body><article><p>Two documents:
        <a href="/papers/harbours">the paper</a> and <a href="/books/canals.epub">the book</a>.</p></article></body></html>"#;
    let app = axum::Router::new()
        .route("/", axum::routing::get(move || async move { ([(CONTENT_TYPE, "text/html")], index) }))
        // By its type (no extension in the URL).
        .route(
            "/papers/harbours",
            axum::routing::get(move || async move { ([(CONTENT_TYPE, "application/pdf")], pdf) }),
        )
        // By its name (served as bytes of no particular type).
        .route(
            "/books/canals.epub",
            axum::routing::get(move || async move { ([(CONTENT_TYPE, "application/octet-stream")], epub) }),
        );
    let base = crate::support::serve_loopback(app);
    let config = WebSourceConfig {
        seeds: vec![format!("{base}/")],
        rate_per_host: 1_000.0,
        recrawl: Duration::ZERO,
        respect_robots: false,
        ..WebSourceConfig::default()
    };
    let state = tempfile::tempdir().unwrap();
    let (tx, rx) = crossbeam_channel::bounded(64);
    let handle = WebSource::spawn("web".into(), config, state.path().to_owned(), None, tx).unwrap();
    handle.wait().unwrap();
    let (mut documents, mut errors) = (Vec::new(), Vec::new());
    for event in rx.try_iter() {
        take(event, &mut documents, &mut errors);
    }
    assert!(errors.is_empty(), "{errors:?}");
    let paper = documents.iter().find(|d| d.doc_id == format!("{base}/papers/harbours")).expect("the PDF");
    assert_eq!(paper.title, "Harbours at Dawn");
    assert_eq!(paper.format, Some(ContentFormat::Markdown));
    assert!(paper.content.contains("apple harvest"), "{}", paper.content);
    let book = documents.iter().find(|d| d.doc_id == format!("{base}/books/canals.epub")).expect("the EPUB");
    assert!(book.content.contains("# Locks"), "{}", book.content);
}
