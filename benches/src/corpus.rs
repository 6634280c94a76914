//! A corpus of real documents for benchmarks: the State of the Union
//! speeches of the demo (articles), and the Markdown and Rust files of the
//! crates in `~/.cargo/registry/src` (articles and repository files), in a
//! deterministic order.

use std::path::{Path, PathBuf};

use twinflow_schemas::{ContentFormat, Document, DocumentChange, DocumentKind};

/// Files larger than this are left out (generated code, vendored data).
const MAX_FILE: u64 = 256 * 1024;

/// Up to `n` real documents. Needs the demo corpus in the cache (`twinflow
/// up --demo` fetches it) and a cargo registry with sources (any build).
pub fn load(n: usize) -> anyhow::Result<Vec<DocumentChange>> {
    let mut out = Vec::with_capacity(n);
    let cache = twinflow_connectors::demo::default_cache_dir();
    if let Ok(dir) = twinflow_connectors::demo::fetch_sotu(&cache) {
        out.extend(twinflow_connectors::demo::sotu_changes(&dir, None)?);
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_default();
    let mut files = Vec::new();
    collect(&home.join("registry").join("src"), &mut files);
    files.sort();
    for path in files {
        if out.len() >= n {
            break;
        }
        let Ok(content) = std::fs::read_to_string(&path) else { continue };
        if content.trim().is_empty() {
            continue;
        }
        let is_rust = path.extension().is_some_and(|e| e == "rs");
        let rel = path.strip_prefix(&home).unwrap_or(&path).display().to_string();
        let krate = rel.split('/').nth(3).unwrap_or("").to_owned();
        out.push(DocumentChange::Upsert(Document {
            doc_id: format!("crate:{rel}"),
            kind: if is_rust { DocumentKind::Repository } else { DocumentKind::Article },
            author: krate,
            title: path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
            url: format!("file://{}", path.display()),
            source: "bench".into(),
            format: Some(if is_rust { ContentFormat::Code } else { ContentFormat::Markdown }),
            fetched_at: Some(0),
            content,
        }));
    }
    out.truncate(n);
    anyhow::ensure!(
        !out.is_empty(),
        "no documents found: fetch the demo corpus or build once to fill ~/.cargo/registry"
    );
    Ok(out)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            collect(&path, out);
        } else if meta.len() <= MAX_FILE && path.extension().is_some_and(|e| e == "rs" || e == "md") {
            out.push(path);
        }
    }
}

/// `changes` as an NDJSON body for `POST /v1/documents`.
pub fn ndjson(changes: &[DocumentChange]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    for change in changes {
        serde_json::to_writer(&mut body, change)?;
        body.push(b'\n');
    }
    Ok(body)
}

/// The same document with one sentence changed: the first ". " becomes
/// ", indeed. " (or a line is appended when there is none).
pub fn edit(change: &DocumentChange) -> DocumentChange {
    let mut change = change.clone();
    if let DocumentChange::Upsert(doc) = &mut change {
        let at = doc.content.len() / 2;
        let at = (at..doc.content.len()).find(|i| doc.content.is_char_boundary(*i)).unwrap_or(0);
        match doc.content[at..].find(". ") {
            Some(pos) => doc.content.replace_range(at + pos..at + pos + 2, ", indeed. "),
            None => doc.content.push_str("\n// edited\n"),
        }
    }
    change
}
