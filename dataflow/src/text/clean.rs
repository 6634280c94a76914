//! Clean: one document version → plain text, deterministically, per format.
//!
//! Owns format inference ([`infer_format`]), the HTML and Markdown
//! strippers, whitespace/unicode normalisation and the boilerplate-line
//! filter. Output of prose formats: paragraphs separated by exactly one blank
//! line ("\n\n"), lines trimmed, single spaces, NFC. Code keeps its layout.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
use scraper::{Html, Node};
use twinflow_schemas::{ContentFormat, Document, DocumentKind};
use unicode_normalization::UnicodeNormalization;

/// Lines dropped from prose when they are exactly one of these (compared
/// lowercased, ignoring leading/trailing punctuation and symbols such as
/// `:`, `…`, `»`): the web chrome that crawlers pick up around an article.
pub const BOILERPLATE_LINES: &[&str] = &[
    "share this",
    "share this article",
    "share this post",
    "share on facebook",
    "share on twitter",
    "share on linkedin",
    "tweet",
    "subscribe",
    "subscribe now",
    "subscribe to our newsletter",
    "sign up for our newsletter",
    "cookie settings",
    "accept all cookies",
    "accept cookies",
    "we use cookies",
    "advertisement",
    "sponsored",
    "read more",
    "continue reading",
    "skip to content",
    "skip to main content",
    "back to top",
    "leave a comment",
    "related posts",
    "related articles",
    "you may also like",
];

/// HTML elements whose whole subtree is dropped.
const HTML_SKIPPED: &[&str] = &[
    "head", "script", "style", "noscript", "nav", "header", "footer", "aside", "form", "svg", "template", "iframe",
    "object", "canvas", "button", "select", "textarea", "math",
];

/// HTML elements that end a line (sentences on either side never merge).
const HTML_LINES: &[&str] = &["br", "li", "dt", "dd", "tr", "option"];

/// HTML elements that end a paragraph (on open and on close; skipped ones
/// on close only, so the text around a dropped `<nav>` does not merge).
const HTML_PARAGRAPHS: &[&str] = &[
    "p",
    "div",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "section",
    "article",
    "main",
    "ul",
    "ol",
    "dl",
    "table",
    "figure",
    "figcaption",
    "hr",
    "address",
    "details",
    "summary",
    "caption",
    "fieldset",
    "hgroup",
    "body",
    "nav",
    "header",
    "footer",
    "aside",
    "form",
];

/// Characters dropped besides control characters: zero-width space, byte
/// order mark, soft hyphen (invisible, but they split words for search).
const INVISIBLE: &[char] = &['\u{200B}', '\u{FEFF}', '\u{00AD}'];

/// Cleans one document version into the text that is chunked.
///
/// The format is `doc.format` when set, else [`infer_format`]. Never panics.
pub fn clean(doc: &Document) -> String {
    clean_as(&doc.content, infer_format(doc))
}

/// Cleans `content` written in `format` (the format already resolved).
pub fn clean_as(content: &str, format: ContentFormat) -> String {
    clean_paged(content, format).text
}

/// The page break of a paged document's content (a PDF's text layer), as
/// pdftotext writes it: a form feed between pages.
pub const PAGE_BREAK: char = '\u{c}';

/// A cleaned text and where each of its pages begins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cleaned {
    pub text: String,
    /// `(offset, page)` of each page with text, ascending: the page
    /// (1-based; empty pages keep their number) starts at character
    /// `offset` of `text`. Empty for a text without pages.
    pub pages: Vec<(u32, u32)>,
}

impl Cleaned {
    /// The first and last page of the characters `start..end` of the text;
    /// `None` for a text without pages.
    pub fn pages_of(&self, start: u32, end: u32) -> Option<(u32, u32)> {
        let page_at = |at: u32| {
            let after = self.pages.partition_point(|&(offset, _)| offset <= at);
            self.pages[after.saturating_sub(1)].1
        };
        (!self.pages.is_empty()).then(|| (page_at(start), page_at(end.saturating_sub(1).max(start))))
    }
}

/// [`clean_as`], keeping pages: prose whose content holds [`PAGE_BREAK`]s
/// is cleaned page by page, the pages joined as paragraphs, and each page's
/// first character remembered. Only Markdown and plain text are paged (a
/// form feed in HTML is white space, in a source file layout).
pub fn clean_paged(content: &str, format: ContentFormat) -> Cleaned {
    let paged = matches!(format, ContentFormat::Markdown | ContentFormat::Text);
    if !paged || !content.contains(PAGE_BREAK) {
        return Cleaned { text: clean_page(content, format), pages: Vec::new() };
    }
    let mut cleaned = Cleaned::default();
    let mut chars = 0u32;
    for (index, page) in content.split(PAGE_BREAK).enumerate() {
        let text = clean_page(page, format);
        if text.is_empty() {
            continue;
        }
        if !cleaned.text.is_empty() {
            cleaned.text.push_str("\n\n");
            chars = chars.saturating_add(2);
        }
        cleaned.pages.push((chars, u32::try_from(index + 1).unwrap_or(u32::MAX)));
        chars = chars.saturating_add(u32::try_from(text.chars().count()).unwrap_or(u32::MAX));
        cleaned.text.push_str(&text);
    }
    cleaned
}

fn clean_page(content: &str, format: ContentFormat) -> String {
    match format {
        ContentFormat::Code => clean_code(content),
        ContentFormat::Html => html_text(content),
        ContentFormat::Markdown => markdown_text(content),
        ContentFormat::Text => normalise(content),
    }
}

/// The format a document is cleaned as: `doc.format` when set; otherwise
/// code for repositories, HTML when the content starts with `<!doctype` or
/// `<html` or has at least three block tags (`<p>`, `<div`, `<br`, `<h1>`…)
/// in its first 8 KiB, Markdown for everything else (plain text is valid
/// Markdown).
pub fn infer_format(doc: &Document) -> ContentFormat {
    if let Some(format) = doc.format {
        return format;
    }
    if doc.kind == DocumentKind::Repository {
        return ContentFormat::Code;
    }
    let head: String = doc.content.trim_start().chars().take(8192).collect();
    let head = head.to_ascii_lowercase();
    if head.starts_with("<!doctype") || head.starts_with("<html") {
        return ContentFormat::Html;
    }
    let tags = ["<p>", "<p ", "<div", "<br", "<h1", "<h2", "<h3", "<body", "<article"];
    let count: usize = tags.iter().map(|tag| head.matches(tag).count()).sum();
    if count >= 3 { ContentFormat::Html } else { ContentFormat::Markdown }
}

/// Code: verbatim except line endings (CRLF/CR → LF), trailing whitespace of
/// each line, and trailing blank lines.
pub fn clean_code(content: &str) -> String {
    let unified = unify_newlines(content);
    let mut out = String::with_capacity(unified.len());
    for line in unified.split('\n') {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.truncate(out.trim_end().len());
    out
}

/// Normalisation of prose: NFC; control characters other than `\n`
/// dropped; tabs and other spaces → one space; lines trimmed; boilerplate
/// lines ([`BOILERPLATE_LINES`]) dropped; runs of blank lines → one blank
/// line; the whole text trimmed.
pub fn normalise(text: &str) -> String {
    let mut flat = String::with_capacity(text.len());
    let mut last_space = false;
    for c in unify_newlines(text).nfc() {
        if c == '\n' {
            flat.push('\n');
            last_space = false;
        } else if c.is_whitespace() {
            if !last_space {
                flat.push(' ');
            }
            last_space = true;
        } else if !c.is_control() && !INVISIBLE.contains(&c) {
            flat.push(c);
            last_space = false;
        }
    }
    let mut out = String::with_capacity(flat.len());
    let mut blank_pending = false;
    for line in flat.split('\n') {
        let line = line.trim();
        if line.is_empty() {
            blank_pending = true;
            continue;
        }
        if is_boilerplate(line) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_pending { "\n\n" } else { "\n" });
        }
        out.push_str(line);
        blank_pending = false;
    }
    out
}

/// True when a (trimmed) line is one of [`BOILERPLATE_LINES`].
pub fn is_boilerplate(line: &str) -> bool {
    if line.len() > 40 {
        return false;
    }
    let core = line.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();
    BOILERPLATE_LINES.contains(&core.as_str())
}

fn unify_newlines(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// Preformatted text (code blocks): control characters other than tab
/// dropped, trailing spaces and surrounding blank lines removed, runs of
/// blank lines collapsed to one; indentation kept.
fn tidy_pre(text: &str) -> String {
    let unified = unify_newlines(text);
    let mut out = String::with_capacity(unified.len());
    let mut blank_pending = false;
    for line in unified.split('\n') {
        let line: String =
            line.chars().filter(|&c| c == '\t' || (!c.is_control() && !INVISIBLE.contains(&c))).collect();
        let line = line.trim_end();
        if line.is_empty() {
            blank_pending = true;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_pending { "\n\n" } else { "\n" });
        }
        out.push_str(line);
        blank_pending = false;
    }
    out
}

/// Collects text as prose and preformatted blocks, then normalises each.
#[derive(Default)]
struct Blocks {
    done: Vec<String>,
    prose: String,
}

impl Blocks {
    fn text(&mut self, text: &str) {
        self.prose.extend(text.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }));
    }

    /// Ends the current line; consecutive breaks do not add blank lines.
    fn line_break(&mut self) {
        self.prose.truncate(self.prose.trim_end_matches(' ').len());
        if !self.prose.ends_with('\n') {
            self.prose.push('\n');
        }
    }

    /// Ends the current paragraph with one blank line.
    fn paragraph_break(&mut self) {
        self.line_break();
        if !self.prose.ends_with("\n\n") {
            self.prose.push('\n');
        }
    }

    fn pre(&mut self, code: &str) {
        self.flush();
        let code = tidy_pre(code);
        if !code.is_empty() {
            self.done.push(code);
        }
    }

    fn flush(&mut self) {
        let prose = normalise(&std::mem::take(&mut self.prose));
        if !prose.is_empty() {
            self.done.push(prose);
        }
    }

    fn finish(mut self) -> String {
        self.flush();
        self.done.join("\n\n")
    }
}

/// HTML → text of the body, walking the tree without recursion (so deep
/// nesting cannot overflow the stack).
pub fn html_text(html: &str) -> String {
    let doc = Html::parse_document(html);
    let root = doc.tree.root();
    let mut out = Blocks::default();
    let mut pre = String::new();
    let mut pre_depth = 0usize;
    let mut node = root;
    'walk: loop {
        // Open `node`; descend unless it is skipped or has no children.
        let mut descend = true;
        match node.value() {
            Node::Text(text) if pre_depth > 0 => pre.push_str(text),
            Node::Text(text) => out.text(text),
            Node::Element(el) => {
                let name = el.name();
                if HTML_SKIPPED.contains(&name) {
                    descend = false;
                } else if name == "pre" {
                    pre_depth += 1;
                } else if pre_depth > 0 {
                    if name == "br" {
                        pre.push('\n');
                    }
                } else if HTML_PARAGRAPHS.contains(&name) || HTML_LINES.contains(&name) {
                    html_break(&mut out, name);
                } else if name == "td" || name == "th" {
                    out.text(" ");
                }
            }
            _ => {}
        }
        if descend {
            if let Some(child) = node.first_child() {
                node = child;
                continue;
            }
        }
        // Close `node` and its ancestors until one has a next sibling.
        loop {
            if let Node::Element(el) = node.value() {
                let name = el.name();
                if name == "pre" && pre_depth > 0 {
                    pre_depth -= 1;
                    if pre_depth == 0 {
                        out.pre(&std::mem::take(&mut pre));
                    }
                } else if pre_depth == 0 && name != "br" {
                    html_break(&mut out, name);
                }
            }
            if node == root {
                break 'walk;
            }
            if let Some(next) = node.next_sibling() {
                node = next;
                break;
            }
            match node.parent() {
                Some(parent) => node = parent,
                None => break 'walk,
            }
        }
    }
    if !pre.is_empty() {
        out.pre(&pre);
    }
    out.finish()
}

fn html_break(out: &mut Blocks, name: &str) {
    if HTML_PARAGRAPHS.contains(&name) {
        out.paragraph_break();
    } else if HTML_LINES.contains(&name) {
        out.line_break();
    }
}

/// Markdown → text: headings and paragraphs as paragraphs, list items one
/// per line, code kept, link and image text kept, HTML (except `<br>`, a
/// line break) and front matter dropped.
pub fn markdown_text(markdown: &str) -> String {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS;
    let mut out = Blocks::default();
    let mut code: Option<String> = None;
    let mut metadata = false;
    for event in Parser::new_ext(markdown, options) {
        match event {
            Event::Start(Tag::CodeBlock(_)) => code = Some(String::new()),
            Event::End(TagEnd::CodeBlock) => out.pre(&code.take().unwrap_or_default()),
            Event::Start(Tag::MetadataBlock(_)) => metadata = true,
            Event::End(TagEnd::MetadataBlock(_)) => metadata = false,
            Event::Text(text) => match code.as_mut() {
                Some(code) => code.push_str(&text),
                None if metadata => {}
                None => out.text(&text),
            },
            Event::Code(text) | Event::InlineMath(text) | Event::DisplayMath(text) => out.text(&text),
            Event::InlineHtml(html) if html.to_ascii_lowercase().starts_with("<br") => out.line_break(),
            Event::SoftBreak => out.text(" "),
            Event::HardBreak => out.line_break(),
            Event::Rule => out.paragraph_break(),
            Event::Start(tag) => match tag {
                Tag::Paragraph
                | Tag::Heading { .. }
                | Tag::BlockQuote(_)
                | Tag::List(_)
                | Tag::Table(_)
                | Tag::FootnoteDefinition(_) => out.paragraph_break(),
                Tag::Item | Tag::TableHead | Tag::TableRow => out.line_break(),
                _ => {}
            },
            Event::End(tag) => match tag {
                TagEnd::Paragraph
                | TagEnd::Heading(_)
                | TagEnd::BlockQuote(_)
                | TagEnd::List(_)
                | TagEnd::Table
                | TagEnd::FootnoteDefinition => out.paragraph_break(),
                TagEnd::Item | TagEnd::TableHead | TagEnd::TableRow => out.line_break(),
                TagEnd::TableCell => out.text(" "),
                _ => {}
            },
            // Raw HTML, footnote references and task markers carry no prose.
            _ => {}
        }
    }
    if let Some(code) = code {
        out.pre(&code);
    }
    out.finish()
}

#[cfg(test)]
mod tests;
