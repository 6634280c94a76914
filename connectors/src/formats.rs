//! Documents in the formats authors keep, turned into Markdown text: HTML
//! (its main content, chosen readability-style, without navigation and
//! other boilerplate), PDF (the text layer, page by page, a form feed
//! between pages: [`PAGE_BREAK`]), DOCX (paragraphs, headings, lists, tables) and EPUB (the
//! spine's chapters, each XHTML file converted to Markdown). Headings,
//! lists and code blocks are kept (code verbatim). Every source that reads files or pages chooses by extension
//! or content type through [`Binary::of`] and [`extract`]; a document that
//! cannot be read is an error with the reason (the sources make it an
//! ingest error), never a panic: the PDF reader's panics on hostile files
//! are caught.

use std::io::{Cursor, Read};

use quick_xml::events::Event;

/// What stands between two pages of a paged document's Markdown (a PDF's):
/// a form feed on a line of its own, as pdftotext writes pages. Cleaning
/// reads it as the page break that numbers each chunk's pages.
pub const PAGE_BREAK: char = '\u{c}';

/// A format read from bytes rather than text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Pdf,
    Docx,
    Epub,
}

impl Binary {
    /// By file extension (any case).
    pub fn of_extension(extension: &str) -> Option<Self> {
        match extension.to_ascii_lowercase().as_str() {
            "pdf" => Some(Self::Pdf),
            "docx" => Some(Self::Docx),
            "epub" => Some(Self::Epub),
            _ => None,
        }
    }

    /// By HTTP content type (`application/pdf; …`).
    pub fn of_content_type(content_type: &str) -> Option<Self> {
        let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/pdf" => Some(Self::Pdf),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => Some(Self::Docx),
            "application/epub+zip" => Some(Self::Epub),
            _ => None,
        }
    }
}

/// A document's text, as Markdown, and the title it gives itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extracted {
    pub title: Option<String>,
    pub markdown: String,
}

/// Reads `bytes` as `format`; the reason when it cannot.
pub fn extract(format: Binary, bytes: &[u8]) -> Result<Extracted, String> {
    let extracted = match format {
        Binary::Pdf => pdf(bytes)?,
        Binary::Docx => docx(bytes)?,
        Binary::Epub => epub(bytes)?,
    };
    if extracted.markdown.trim().is_empty() {
        return Err(match format {
            Binary::Pdf => "the PDF has no text layer (a scan?): nothing to read".into(),
            _ => "the document holds no text".into(),
        });
    }
    Ok(extracted)
}

fn pdf(bytes: &[u8]) -> Result<Extracted, String> {
    // The reader panics on some malformed files: a bad file is an error, not the end of the source.
    let pages = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem_by_pages(bytes))
        .map_err(|_| "not a readable PDF (the reader gave up)".to_owned())?
        .map_err(|e| format!("not a readable PDF: {e}"))?;
    // Empty pages stay (as nothing between two breaks): later pages keep their numbers.
    let pages: Vec<String> = pages.iter().map(|page| tidy_pdf_page(page)).collect();
    Ok(Extracted { title: pdf_title(bytes), markdown: pages.join(&format!("\n\n{PAGE_BREAK}\n\n")) })
}

/// A page's text: lines kept, runs of blank lines made one, hyphenated
/// line ends joined.
fn tidy_pdf_page(page: &str) -> String {
    let mut out = String::with_capacity(page.len());
    let mut blank = 0;
    for line in page.lines().map(str::trim_end) {
        if line.trim().is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            if blank > 0 {
                out.push_str("\n\n");
            } else if out.ends_with('-') && line.starts_with(|c: char| c.is_lowercase()) {
                out.pop();
            } else {
                out.push('\n');
            }
        }
        blank = 0;
        out.push_str(line.trim_start());
    }
    out
}

/// The `/Title` of the PDF's information dictionary, if it has one.
fn pdf_title(bytes: &[u8]) -> Option<String> {
    let document = lopdf::Document::load_mem(bytes).ok()?;
    let info = document.trailer.get(b"Info").ok()?;
    let info = match info {
        lopdf::Object::Reference(id) => document.get_object(*id).ok()?,
        other => other,
    };
    let title = info.as_dict().ok()?.get(b"Title").ok()?;
    let text = lopdf::decode_text_string(title).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// Elements that are never content.
const BOILERPLATE: [&str; 14] = [
    "script", "style", "noscript", "template", "head", "nav", "header", "footer", "aside", "form", "iframe", "svg",
    "button", "select",
];

/// HTML (a page or a fragment) as Markdown, boilerplate elements left out.
pub fn html_to_markdown(html: &str) -> String {
    let options = htmd::options::Options {
        bullet_list_marker: htmd::options::BulletListMarker::Dash,
        ul_bullet_spacing: 1,
        ol_number_spacing: 1,
        ..Default::default()
    };
    let converter = htmd::HtmlToMarkdown::builder().options(options).skip_tags(BOILERPLATE.to_vec()).build();
    match converter.convert(html) {
        Ok(markdown) => markdown.trim().to_owned(),
        // Only a failing writer fails the converter; the text alone is better than nothing.
        Err(_) => scraper::Html::parse_fragment(html).root_element().text().collect::<String>().trim().to_owned(),
    }
}

/// The HTML of a page's main content, chosen as readability does: the one
/// `<article>`, else `<main>` (or `role="main"`), else the element whose
/// paragraphs hold the most text (less what is links), else `<body>`.
pub fn main_html(doc: &scraper::Html) -> Option<String> {
    let select = |css: &str| scraper::Selector::parse(css).expect("a valid selector");
    let articles: Vec<_> = doc.select(&select("article")).collect();
    if articles.len() == 1 {
        return Some(articles[0].inner_html());
    }
    if let Some(main) = doc.select(&select("main, [role=main]")).next() {
        return Some(main.inner_html());
    }
    // Each paragraph's text, less its links' text, scores its parent fully and its grandparent half.
    let mut scores: std::collections::HashMap<_, f64> = std::collections::HashMap::new();
    for paragraph in doc.select(&select("p, pre, blockquote, li, td")) {
        if paragraph.ancestors().filter_map(scraper::ElementRef::wrap).any(|a| BOILERPLATE.contains(&a.value().name()))
        {
            continue;
        }
        let text: usize = paragraph.text().map(|t| t.trim().chars().count()).sum();
        let linked: usize =
            paragraph.select(&select("a")).flat_map(|a| a.text()).map(|t| t.trim().chars().count()).sum();
        let score = text.saturating_sub(linked) as f64;
        if score < 25.0 {
            continue;
        }
        let mut ancestors = paragraph.ancestors().filter_map(scraper::ElementRef::wrap);
        if let Some(parent) = ancestors.next() {
            *scores.entry(parent.id()).or_default() += score;
        }
        if let Some(grandparent) = ancestors.next() {
            *scores.entry(grandparent.id()).or_default() += score / 2.0;
        }
    }
    let best = scores.into_iter().max_by(|a, b| a.1.total_cmp(&b.1)).map(|(id, _)| id);
    if let Some(element) = best.and_then(|id| doc.tree.get(id)).and_then(scraper::ElementRef::wrap) {
        return Some(element.inner_html());
    }
    doc.select(&select("body")).next().map(|body| body.inner_html())
}

/// A whole HTML page as Markdown: its main content, and its title.
pub fn html_page(html: &str) -> Extracted {
    let doc = scraper::Html::parse_document(html);
    let main = main_html(&doc).unwrap_or_else(|| html.to_owned());
    Extracted { title: html_title(html), markdown: html_to_markdown(&main) }
}

/// The text of the `<title>` element, whitespace collapsed and the common
/// entities decoded.
fn html_title(html: &str) -> Option<String> {
    // ASCII lowercasing keeps byte offsets, so positions carry over.
    let lower = html.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = start + lower[start..].find("</title")?;
    let title = html[start..end].split_whitespace().collect::<Vec<_>>().join(" ");
    let title = title
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    (!title.is_empty()).then_some(title)
}

/// A ZIP container's entry, as text.
fn entry(archive: &mut zip::ZipArchive<Cursor<&[u8]>>, name: &str) -> Result<String, String> {
    let mut file = archive.by_name(name).map_err(|e| format!("no {name} in the container: {e}"))?;
    let mut text = String::new();
    file.by_ref().take(64 << 20).read_to_string(&mut text).map_err(|e| format!("{name} is not readable text: {e}"))?;
    Ok(text)
}

fn open_zip(bytes: &[u8]) -> Result<zip::ZipArchive<Cursor<&[u8]>>, String> {
    zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| format!("not a ZIP container: {e}"))
}

/// The value of attribute `name` (by local name) of an element.
fn attribute(element: &quick_xml::events::BytesStart<'_>, name: &[u8]) -> Option<String> {
    element
        .attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == name)
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

fn docx(bytes: &[u8]) -> Result<Extracted, String> {
    let mut archive = open_zip(bytes)?;
    let xml = entry(&mut archive, "word/document.xml")?;
    let title = entry(&mut archive, "docProps/core.xml").ok().and_then(|core| element_text(&core, b"title"));
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut out = String::new();
    // The paragraph being read: its text, its heading level, whether it is a list item.
    let mut paragraph = String::new();
    let mut heading: Option<usize> = None;
    let mut listed = false;
    let mut in_text = false;
    let mut cells: Vec<String> = Vec::new();
    let mut table_depth = 0usize;
    loop {
        match reader.read_event().map_err(|e| format!("word/document.xml is not XML: {e}"))? {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                b"t" => in_text = true,
                b"tab" => paragraph.push('\t'),
                b"br" | b"cr" => paragraph.push('\n'),
                b"pStyle" => {
                    let style = attribute(&e, b"val").unwrap_or_default().to_ascii_lowercase();
                    heading = if style == "title" {
                        Some(1)
                    } else {
                        style.strip_prefix("heading").and_then(|n| n.trim().parse().ok()).map(|n: usize| n.clamp(1, 6))
                    };
                    listed |= style.contains("list");
                }
                b"numPr" => listed = true,
                b"tbl" => {
                    if table_depth == 0 && !out.is_empty() && !out.ends_with("\n\n") {
                        out.push('\n');
                    }
                    table_depth += 1;
                }
                b"tc" => cells.push(String::new()),
                _ => {}
            },
            Event::Text(t) if in_text => {
                let text = t.decode().map_err(|e| format!("word/document.xml: {e}"))?;
                let text = quick_xml::escape::unescape(&text).map_err(|e| format!("word/document.xml: {e}"))?;
                paragraph.push_str(&text);
            }
            Event::GeneralRef(r) if in_text => {
                if let Some(c) = r.resolve_char_ref().ok().flatten() {
                    paragraph.push(c);
                } else if let Ok(name) = r.decode() {
                    paragraph.push_str(quick_xml::escape::resolve_xml_entity(&name).unwrap_or_default());
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"t" => in_text = false,
                b"p" => {
                    let text = paragraph.trim().to_owned();
                    if table_depth > 0 {
                        if let Some(cell) = cells.last_mut()
                            && !text.is_empty()
                        {
                            if !cell.is_empty() {
                                cell.push(' ');
                            }
                            cell.push_str(&text);
                        }
                    } else if !text.is_empty() {
                        match (heading, listed) {
                            (Some(level), _) => out.push_str(&format!("{} {text}\n\n", "#".repeat(level))),
                            (None, true) => out.push_str(&format!("- {text}\n")),
                            (None, false) => {
                                if out.ends_with("\n") && !out.ends_with("\n\n") {
                                    out.push('\n');
                                }
                                out.push_str(&text);
                                out.push_str("\n\n");
                            }
                        }
                    }
                    paragraph.clear();
                    heading = None;
                    listed = false;
                }
                b"tr" => {
                    let row: Vec<&str> = cells.iter().map(|c| c.trim()).collect();
                    if row.iter().any(|c| !c.is_empty()) {
                        out.push_str(&format!("| {} |\n", row.join(" | ")));
                    }
                    cells.clear();
                }
                b"tbl" => {
                    table_depth = table_depth.saturating_sub(1);
                    out.push('\n');
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    let title = title.or_else(|| out.lines().find_map(|l| l.strip_prefix("# ").map(str::to_owned)));
    Ok(Extracted { title, markdown: out.trim().to_owned() })
}

/// The text of the first element named `name` (by local name) in `xml`.
fn element_text(xml: &str, name: &[u8]) -> Option<String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut inside = false;
    let mut text = String::new();
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) if e.local_name().as_ref() == name => inside = true,
            Event::Text(t) if inside => {
                let raw = t.decode().ok()?;
                text.push_str(&quick_xml::escape::unescape(&raw).ok()?);
            }
            Event::GeneralRef(r) if inside => {
                if let Some(c) = r.resolve_char_ref().ok().flatten() {
                    text.push(c);
                } else if let Ok(entity) = r.decode() {
                    text.push_str(quick_xml::escape::resolve_xml_entity(&entity).unwrap_or_default());
                }
            }
            Event::End(e) if inside && e.local_name().as_ref() == name => {
                let text = text.trim();
                return (!text.is_empty()).then(|| text.to_owned());
            }
            Event::Eof => return None,
            _ => {}
        }
    }
}

fn epub(bytes: &[u8]) -> Result<Extracted, String> {
    let mut archive = open_zip(bytes)?;
    let container = entry(&mut archive, "META-INF/container.xml")?;
    let opf_path = first_attribute(&container, b"rootfile", b"full-path")
        .ok_or_else(|| "META-INF/container.xml names no rootfile".to_owned())?;
    let opf = entry(&mut archive, &opf_path)?;
    let base = opf_path.rsplit_once('/').map_or(String::new(), |(dir, _)| format!("{dir}/"));
    let title = element_text(&opf, b"title");

    // The manifest (id → href, media type) and the spine (reading order).
    let mut manifest = std::collections::HashMap::new();
    let mut spine = Vec::new();
    let mut reader = quick_xml::Reader::from_str(&opf);
    loop {
        match reader.read_event().map_err(|e| format!("{opf_path} is not XML: {e}"))? {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                b"item" => {
                    if let (Some(id), Some(href)) = (attribute(&e, b"id"), attribute(&e, b"href")) {
                        manifest.insert(id, (href, attribute(&e, b"media-type").unwrap_or_default()));
                    }
                }
                b"itemref" => spine.extend(attribute(&e, b"idref")),
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    if spine.is_empty() {
        return Err(format!("{opf_path} has an empty spine"));
    }
    let mut chapters = Vec::new();
    for idref in &spine {
        let Some((href, media_type)) = manifest.get(idref) else { continue };
        if !media_type.contains("html") {
            continue;
        }
        let path = format!("{base}{}", percent_decode(href.split('#').next().unwrap_or_default()));
        let html = entry(&mut archive, &path)?;
        let markdown = html_to_markdown(&html);
        if !markdown.is_empty() {
            chapters.push(markdown);
        }
    }
    Ok(Extracted { title, markdown: chapters.join("\n\n") })
}

/// The value of attribute `attr` of the first element named `name`.
fn first_attribute(xml: &str, name: &[u8], attr: &[u8]) -> Option<String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == name => return attribute(&e, attr),
            Event::Eof => return None,
            _ => {}
        }
    }
}

/// `%20` and the like in an EPUB href.
fn percent_decode(href: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", href.replace('+', "%2B")).as_bytes())
        .next()
        .map_or_else(|| href.to_owned(), |(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_by_extension_and_content_type() {
        assert_eq!(Binary::of_extension("PDF"), Some(Binary::Pdf));
        assert_eq!(Binary::of_extension("md"), None);
        assert_eq!(Binary::of_content_type("application/epub+zip"), Some(Binary::Epub));
        assert_eq!(Binary::of_content_type("application/pdf; qs=0.9"), Some(Binary::Pdf));
        assert_eq!(Binary::of_content_type("text/html"), None);
    }

    #[test]
    fn pdf_pages_are_tidied() {
        assert_eq!(tidy_pdf_page("  A line\nthat goes on-\nward\n\n\n\nNext   \n"), "A line\nthat goes onward\n\nNext");
    }

    #[test]
    fn html_pages_keep_their_main_content_as_markdown() {
        let page = r#"<html><head><title>Tolls</title><style>p{}</style></head><body>
            <header><a href="/">Home</a> <a href="/about">About</a></header>
            <nav><ul><li>menu one</li><li>menu two</li></ul></nav>
            <div class="content"><h2>Tolls on the canal</h2>
              <p>Every barge paid a toll by weight at the first lock of the canal.</p>
              <ul><li>coal paid least</li><li>wine paid most</li></ul>
              <pre><code>toll = weight * rate
    if weight &gt; 40:
        toll += surcharge</code></pre>
              <p>The keepers wrote every toll into a ledger kept at the lock house.</p></div>
            <div class="sidebar"><p><a href="/a">Related: a post about locks and their keepers</a></p></div>
            <footer>Copyright, all rights reserved, and a long line of legal text here.</footer></body></html>"#;
        let page = html_page(page);
        assert_eq!(page.title.as_deref(), Some("Tolls"));
        let md = page.markdown;
        assert!(md.contains("## Tolls on the canal"), "{md}");
        assert!(md.contains("- coal paid least\n- wine paid most"), "{md}");
        assert!(md.contains("toll = weight * rate\n    if weight > 40:\n        toll += surcharge"), "{md}");
        for boilerplate in ["menu one", "Home", "Related", "Copyright", "p{}"] {
            assert!(!md.contains(boilerplate), "{boilerplate:?} in {md}");
        }
        // One <article> is the main content, whatever else the page holds.
        let one = html_page(
            "<body><div><p>outside text that is long enough to score</p></div><article><p>inside</p></article></body>",
        );
        assert_eq!(one.markdown, "inside");
    }

    #[test]
    fn html_titles() {
        let html = "<HTML><head><Title lang=en>\n  Fish &amp; chips </TITLE></head>";
        assert_eq!(html_title(html).as_deref(), Some("Fish & chips"));
        assert_eq!(html_title("<title></title>"), None);
        assert_eq!(html_title("<p>no title</p>"), None);
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        for format in [Binary::Pdf, Binary::Docx, Binary::Epub] {
            let err = extract(format, b"definitely not a document").unwrap_err();
            assert!(!err.is_empty());
        }
        assert_eq!(percent_decode("Text/chapter%201.xhtml"), "Text/chapter 1.xhtml");
    }
}
