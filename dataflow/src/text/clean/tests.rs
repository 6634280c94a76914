use super::*;

fn doc(content: &str, kind: DocumentKind, format: Option<ContentFormat>) -> Document {
    Document {
        doc_id: "d".into(),
        kind,
        author: String::new(),
        title: String::new(),
        url: String::new(),
        source: String::new(),
        format,
        fetched_at: None,
        content: content.into(),
    }
}

fn clean_as(content: &str, format: ContentFormat) -> String {
    clean(&doc(content, DocumentKind::Article, Some(format)))
}

#[test]
fn infers_format_from_kind_and_content() {
    let infer = |content: &str, kind| infer_format(&doc(content, kind, None));
    assert_eq!(infer("fn main() {}", DocumentKind::Repository), ContentFormat::Code);
    assert_eq!(infer("  <!DOCTYPE html><p>x", DocumentKind::Article), ContentFormat::Html);
    assert_eq!(infer("<html><body>x</body></html>", DocumentKind::Post), ContentFormat::Html);
    assert_eq!(infer("<p>a</p><p>b</p><div>c</div>", DocumentKind::Other), ContentFormat::Html);
    assert_eq!(infer("# Title\n\nSome <br> text.", DocumentKind::Article), ContentFormat::Markdown);
    let declared = doc("<p>a</p><p>b</p><p>c</p>", DocumentKind::Article, Some(ContentFormat::Text));
    assert_eq!(infer_format(&declared), ContentFormat::Text);
}

#[test]
fn html_keeps_body_text_and_separates_blocks() {
    let html = r#"<!doctype html><html><head><title>T</title><style>p{}</style></head>
        <body><nav><a href="/">Home</a> | <a href="/about">About</a></nav>
        <header>Site name</header>
        <article><h1>The   Heading</h1><p>First sentence
        spans lines.</p><div>Second block</div><script>var x = 1;</script>
        <ul><li>one</li><li>two &amp; three</li></ul>
        <p>Line<br>break</p><pre>  fn x() {&#10;&#9;1  &#10;&#10;&#10;}</pre><p>Share this:</p><svg><text>svg text</text></svg></article>
        <aside>Related</aside><footer>(c) 2024</footer></body></html>"#;
    let text = clean_as(html, ContentFormat::Html);
    assert_eq!(
        text,
        "The Heading\n\nFirst sentence spans lines.\n\nSecond block\n\none\ntwo & three\n\n\
         Line\nbreak\n\n  fn x() {\n\t1\n\n}"
    );
}

#[test]
fn html_survives_broken_and_deep_markup() {
    let broken = "<div><p>unclosed <b>bold <i>both</div> tail</p></span></table>&bogus;";
    let text = clean_as(broken, ContentFormat::Html);
    assert!(text.contains("unclosed bold both"), "{text:?}");
    assert!(text.contains("tail"), "{text:?}");
    let deep = format!("{}deep{}", "<div>".repeat(20_000), "</div>".repeat(20_000));
    assert_eq!(clean_as(&deep, ContentFormat::Html), "deep");
}

#[test]
fn markdown_becomes_plain_paragraphs() {
    let md = "---\ntitle: front matter\n---\n# A *Title*\n\nSome `code` and<br>a [link](http://x) \
              and ![alt text](img.png).\nSoft break.\n\n- item one\n- item two\n\n\
              ```rust\nfn main() {\n    println!(\"hi\");\n}\n```\n\n<div>raw html</div>\n\n\
              Read more\n\n> quoted <span>inline</span> text\n";
    let text = clean_as(md, ContentFormat::Markdown);
    assert_eq!(
        text,
        "A Title\n\nSome code and\na link and alt text. Soft break.\n\nitem one\nitem two\n\n\
         fn main() {\n    println!(\"hi\");\n}\n\nquoted inline text"
    );
}

#[test]
fn text_is_normalised() {
    // "e" + combining acute → "é" (NFC); NUL and BEL dropped; tabs to spaces.
    let raw = "  Caf\u{0065}\u{0301}\tau\u{0000}\u{0007} lait  \r\n\r\n\r\n\r\nsecond\u{00A0}\u{00A0}line \
               \n  ADVERTISEMENT  \nthird\u{200B}line\n\n\n";
    assert_eq!(clean_as(raw, ContentFormat::Text), "Café au lait\n\nsecond line\nthirdline");
}

#[test]
fn code_is_verbatim_but_tidy() {
    let code = "fn main() {\r\n\tlet x = 1;   \r\n\r\n\r\n    x\t\n}\r\n\r\n";
    let cleaned = clean(&doc(code, DocumentKind::Repository, None));
    assert_eq!(cleaned, "fn main() {\n\tlet x = 1;\n\n\n    x\n}");
}

#[test]
fn boilerplate_lines_match_exactly() {
    assert!(is_boilerplate("Share this:"));
    assert!(is_boilerplate("» READ MORE…"));
    assert!(is_boilerplate("Skip to content"));
    assert!(!is_boilerplate("Read more about cookies in our guide."));
    assert!(!is_boilerplate("Subscribers"));
}

#[test]
fn never_panics_and_stays_normalised() {
    let inputs = [
        String::new(),
        " \n\t\r\n ".into(),
        "😀 emoji 👩‍👩‍👧 and 中文字符。日本語のテキスト".into(),
        "<".into(),
        "<<<>>>&&&;</p></div>".into(),
        "```\nunterminated".into(),
        "[[[[[[((((((**__".repeat(1000),
        "> ".repeat(5000) + "deep quote",
        "\u{0301}\u{FFFF}\u{10FFFF}\u{D7FF}".into(),
    ];
    for input in &inputs {
        for format in [ContentFormat::Text, ContentFormat::Markdown, ContentFormat::Html] {
            let out = clean_as(input, format);
            assert_eq!(out.trim(), out, "{format:?} {input:?}");
            assert!(!out.contains("\n\n\n") && !out.contains("  "), "{format:?} {out:?}");
            assert!(!out.chars().any(|c| c.is_control() && c != '\n' && c != '\t'));
        }
        let _ = clean_as(input, ContentFormat::Code);
    }
    let cjk = clean_as("中文字符。  日本語のテキスト", ContentFormat::Markdown);
    assert_eq!(cjk, "中文字符。 日本語のテキスト");
}

#[test]
fn handles_ten_megabytes() {
    let para = "A sentence with <b>some</b> words, an émoji 😀 and 中文. ";
    let big = para.repeat(10_000_000 / para.len() + 1);
    for format in [ContentFormat::Text, ContentFormat::Markdown, ContentFormat::Html] {
        let out = clean_as(&big, format);
        assert!(out.len() > 5_000_000, "{format:?}: {}", out.len());
        assert!(out.starts_with("A sentence with"), "{format:?}");
    }
    let html = format!("<html><body>{}</body></html>", "<p>para <i>text</i></p>\n".repeat(400_000));
    let out = clean_as(&html, ContentFormat::Html);
    assert!(out.starts_with("para text\n\npara text"), "{}", &out[..40]);
}

#[test]
fn pages_are_cleaned_one_by_one_and_located() {
    let content = "# One\n\nFirst page text.\n\u{c}\n\u{c}Third   page, second line.\u{c}Fourth.";
    for format in [ContentFormat::Markdown, ContentFormat::Text] {
        let cleaned = clean_paged(content, format);
        let first = if format == ContentFormat::Markdown { "One" } else { "# One" };
        assert_eq!(cleaned.text, format!("{first}\n\nFirst page text.\n\nThird page, second line.\n\nFourth."));
        let at = |needle: &str| cleaned.text[..cleaned.text.find(needle).unwrap()].chars().count() as u32;
        // The empty second page keeps its number.
        assert_eq!(cleaned.pages, vec![(0, 1), (at("Third"), 3), (at("Fourth"), 4)]);
        assert_eq!(cleaned.pages_of(0, 3), Some((1, 1)));
        assert_eq!(cleaned.pages_of(at("First"), at("second")), Some((1, 3)));
        assert_eq!(cleaned.pages_of(at("second"), at("Fourth") + 7), Some((3, 4)));
        assert_eq!(cleaned.pages_of(at("Fourth"), at("Fourth")), Some((4, 4)), "an empty range is where it starts");
        assert_eq!(clean_as(content, format), cleaned.text);
    }
    // Without page breaks, and in HTML and code, there are no pages.
    assert_eq!(clean_paged("No pages.", ContentFormat::Markdown).pages, Vec::new());
    assert_eq!(clean_paged("No pages.", ContentFormat::Markdown).pages_of(0, 3), None);
    assert_eq!(clean_paged("<p>a</p>\u{c}<p>b</p>", ContentFormat::Html).pages, Vec::new());
    assert_eq!(clean_paged("fn a() {}\n\u{c}\nfn b() {}", ContentFormat::Code).pages, Vec::new());
}
