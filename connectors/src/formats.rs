//! Documents in the formats authors keep, turned into Markdown text: PDF
//! (the text layer, page by page, pages as paragraphs), DOCX (paragraphs, headings, lists,
//! tables) and EPUB (the spine's chapters, each XHTML file converted to
//! Markdown). Every source that reads files or pages chooses by extension
//! or content type through [`Binary::of`] and [`extract`]; a document that
//! cannot be read is an error with the reason (the sources make it an
//! ingest error), never a panic: the PDF reader's panics on hostile files
//! are caught.

use std::io::{Cursor, Read};

use quick_xml::events::Event;

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
    let pages: Vec<String> = pages.iter().map(|page| tidy_pdf_page(page)).filter(|p| !p.is_empty()).collect();
    Ok(Extracted { title: pdf_title(bytes), markdown: pages.join("\n\n") })
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

/// A ZIP container's entry, as text.
fn entry(archive: &mut zip::ZipArchive<Cursor<&[u8]>>, name: &str) -> Result<String, String> {
    let mut file = archive.by_name(name).map_err(|e| format!("no {name} in the container: {e}"))?;
    let mut text = String::new();
    file.by_ref()
        .take(64 << 20)
        .read_to_string(&mut text)
        .map_err(|e| format!("{name} is not readable text: {e}"))?;
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
    let converter = htmd::HtmlToMarkdown::builder().skip_tags(vec!["script", "style", "head", "nav"]).build();
    let mut chapters = Vec::new();
    for idref in &spine {
        let Some((href, media_type)) = manifest.get(idref) else { continue };
        if !media_type.contains("html") {
            continue;
        }
        let path = format!("{base}{}", percent_decode(href.split('#').next().unwrap_or_default()));
        let html = entry(&mut archive, &path)?;
        let markdown = converter.convert(&html).map_err(|e| format!("{path}: {e}"))?;
        let markdown = markdown.trim();
        if !markdown.is_empty() {
            chapters.push(markdown.to_owned());
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
    fn garbage_is_refused_with_a_reason() {
        for format in [Binary::Pdf, Binary::Docx, Binary::Epub] {
            let err = extract(format, b"definitely not a document").unwrap_err();
            assert!(!err.is_empty());
        }
        assert_eq!(percent_decode("Text/chapter%201.xhtml"), "Text/chapter 1.xhtml");
    }
}
