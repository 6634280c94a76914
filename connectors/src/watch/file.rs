//! One file of a watched directory to one document: which files count, and
//! how their id, title, format and content are found.

use std::fs;
use std::io::Read;
use std::path::{Component, Path};
use std::time::UNIX_EPOCH;

use serde_json::Value;
use twinflow_schemas::config::WatchSourceConfig;
use twinflow_schemas::{ChangeLimits, ContentFormat, Document, DocumentChange};

use crate::IngestError;
use crate::formats::Binary;

/// Reads the file `path` under the watched directory `root` as an upsert.
///
/// `doc_id` is `config.doc_id_prefix` (`file:` by default) and the path
/// relative to `root` with `/` separators;
/// `url` is `file://` and the absolute path; kind and author come from
/// `config`, the format from the extension, the title from the first
/// Markdown `# heading`, the HTML `<title>`, the PDF's, DOCX's or EPUB's
/// own (their text read as Markdown, see `formats`) or else the file stem, and
/// `fetched_at` from the modification time. A `.json` file holds one
/// document as a JSON object: `content` is required, `doc_id`, `title`,
/// `author`, `kind`, `url`, `format` and `fetched_at` override the defaults
/// above.
///
/// A file over `config.max_file`, invalid UTF-8, malformed JSON or a PDF,
/// DOCX or EPUB that cannot be read is an
/// [`IngestError`] located at the file's path.
pub fn file_change(
    root: &Path,
    path: &Path,
    name: &str,
    config: &WatchSourceConfig,
) -> Result<DocumentChange, IngestError> {
    let fail = |reason: String| IngestError::new(name, path.display().to_string(), reason);
    let doc_id = doc_id_for(root, path, &config.doc_id_prefix)
        .ok_or_else(|| fail(format!("not inside the watched directory {}", root.display())))?;
    let meta = fs::metadata(path).map_err(|e| fail(format!("cannot read the file: {e}")))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".into()));
    }
    let max = config.max_file.as_u64();
    let too_large = |len: u64| fail(format!("the file has {len} bytes, more than max_file ({})", config.max_file));
    if meta.len() > max {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    fs::File::open(path)
        .and_then(|file| file.take(max + 1).read_to_end(&mut bytes))
        .map_err(|e| fail(format!("cannot read the file: {e}")))?;
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64));
    }
    let fetched_at = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_millis() as i64);
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let url = format!("file://{}", absolute.display());
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let extension = extension(path);
    if let Some(binary) = Binary::of_extension(&extension) {
        let extracted = crate::formats::extract(binary, &bytes).map_err(fail)?;
        return Ok(DocumentChange::Upsert(Document {
            doc_id,
            kind: config.kind,
            author: config.author.clone(),
            title: extracted.title.unwrap_or(stem),
            url,
            source: name.to_owned(),
            format: Some(ContentFormat::Markdown),
            fetched_at,
            content: extracted.markdown,
        }));
    }
    let mut content = String::from_utf8(bytes)
        .map_err(|e| fail(format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to())))?;
    if content.starts_with('\u{feff}') {
        content.drain(..'\u{feff}'.len_utf8());
    }
    if extension == "json" {
        return json_document(content, doc_id, url, stem, fetched_at, name, config).map_err(fail);
    }
    let mut format = format_for(&extension);
    let title = match format {
        Some(ContentFormat::Markdown) => markdown_title(&content),
        Some(ContentFormat::Html) => {
            // Its main content, as Markdown.
            let page = crate::formats::html_page(&content);
            content = page.markdown;
            format = Some(ContentFormat::Markdown);
            page.title
        }
        _ => None,
    };
    Ok(DocumentChange::Upsert(Document {
        doc_id,
        kind: config.kind,
        author: config.author.clone(),
        title: title.unwrap_or(stem),
        url,
        source: name.to_owned(),
        format,
        fetched_at,
        content,
    }))
}

/// `prefix` and the path relative to `root` with `/` separators.
pub(crate) fn doc_id_for(root: &Path, path: &Path, prefix: &str) -> Option<String> {
    let relative = path.strip_prefix(root).ok()?;
    let parts: Vec<_> = relative
        .components()
        .map(|c| match c {
            Component::Normal(part) => Some(part.to_string_lossy()),
            _ => None,
        })
        .collect::<Option<_>>()?;
    (!parts.is_empty()).then(|| format!("{prefix}{}", parts.join("/")))
}

/// Whether a file or directory name is never watched: hidden (`.name`) or a
/// temporary file of an editor (`name~`, `.swp`, `.tmp`).
pub(crate) fn is_ignored_name(name: &str) -> bool {
    name.starts_with('.') || name.ends_with('~') || name.ends_with(".swp") || name.ends_with(".tmp")
}

/// Whether `path` (under `root`) lies in or is a hidden or temporary entry.
pub(crate) fn is_ignored(root: &Path, path: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(root) else {
        return true;
    };
    relative.components().any(|c| match c {
        Component::Normal(part) => is_ignored_name(&part.to_string_lossy()),
        _ => true,
    })
}

/// Whether a file's extension is one of the configured ones (case-insensitive).
pub(crate) fn is_wanted(path: &Path, config: &WatchSourceConfig) -> bool {
    let extension = extension(path);
    !extension.is_empty()
        && config.extensions.iter().any(|e| e.trim_start_matches('.').eq_ignore_ascii_case(&extension))
}

fn extension(path: &Path) -> String {
    path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default()
}

fn format_for(extension: &str) -> Option<ContentFormat> {
    match extension {
        "md" | "markdown" => Some(ContentFormat::Markdown),
        "html" | "htm" => Some(ContentFormat::Html),
        "txt" => Some(ContentFormat::Text),
        _ => None,
    }
}

/// A `.json` file: one document object, with the file's defaults filled in.
fn json_document(
    content: String,
    doc_id: String,
    url: String,
    stem: String,
    fetched_at: Option<i64>,
    name: &str,
    config: &WatchSourceConfig,
) -> Result<DocumentChange, String> {
    let mut value: Value = serde_json::from_str(&content).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(object) = &mut value else {
        return Err("expected a JSON object with a `content` field".into());
    };
    if let Some(op) = object.get("op")
        && op != "upsert"
    {
        return Err(format!("field `op` is {op}: a watched file holds a document, not a change"));
    }
    object.entry("doc_id").or_insert(doc_id.into());
    object.entry("kind").or_insert(config.kind.as_str().into());
    object.entry("author").or_insert(config.author.clone().into());
    object.entry("title").or_insert(stem.into());
    object.entry("url").or_insert(url.into());
    if let Some(ms) = fetched_at {
        object.entry("fetched_at").or_insert(ms.into());
    }
    let limits = ChangeLimits {
        max_document_bytes: usize::try_from(config.max_file.as_u64()).unwrap_or(usize::MAX),
        ..ChangeLimits::default()
    };
    match twinflow_schemas::change::change_from_value(value, 1, &limits) {
        Ok(DocumentChange::Upsert(mut doc)) => {
            doc.source = name.to_owned();
            Ok(DocumentChange::Upsert(doc))
        }
        Ok(DocumentChange::Delete { .. }) => Err("a watched file cannot delete a document".into()),
        Err(e) => Err(e.message),
    }
}

/// The text of the first ATX `# ` heading outside code fences.
pub(crate) fn markdown_title(text: &str) -> Option<String> {
    let mut in_fence = false;
    for line in text.lines() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let line = line.trim_start_matches(' ');
        if indent <= 3 && (line.starts_with("```") || line.starts_with("~~~")) {
            in_fence = !in_fence;
            continue;
        }
        if in_fence || indent > 3 {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#')
            && (rest.starts_with([' ', '\t']) || rest.trim().is_empty())
        {
            let title = rest.trim().trim_end_matches('#').trim_end();
            if !title.is_empty() {
                return Some(title.to_owned());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_titles() {
        assert_eq!(markdown_title("intro\n# Hello  world #\n# second").as_deref(), Some("Hello  world"));
        assert_eq!(markdown_title("```sh\n# comment\n```\n## sub\n#tag\n# Real").as_deref(), Some("Real"));
        assert_eq!(markdown_title("no heading\n    # indented code"), None);
    }

    #[test]
    fn ids_and_ignored_names() {
        let root = Path::new("/w");
        assert_eq!(doc_id_for(root, Path::new("/w/a/b.md"), "file:").as_deref(), Some("file:a/b.md"));
        assert_eq!(doc_id_for(root, Path::new("/w/a/b.md"), "notes:").as_deref(), Some("notes:a/b.md"));
        assert_eq!(doc_id_for(root, Path::new("/elsewhere/b.md"), "file:"), None);
        assert_eq!(doc_id_for(root, root, "file:"), None);
        for ignored in ["/w/.git/x.md", "/w/a/.hidden.md", "/w/a.md~", "/w/.a.md.swp", "/w/x.tmp"] {
            assert!(is_ignored(root, Path::new(ignored)), "{ignored}");
        }
        assert!(!is_ignored(root, Path::new("/w/a/b.md")));
        let config = WatchSourceConfig::default();
        assert!(is_wanted(Path::new("/w/A.MD"), &config));
        assert!(!is_wanted(Path::new("/w/a.rs"), &config));
        assert!(!is_wanted(Path::new("/w/md"), &config));
    }
}
