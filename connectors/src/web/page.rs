//! One fetched HTML page: its title, author, main content and links.

use scraper::{Html, Selector};
use url::Url;

/// What the crawler keeps of a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub title: String,
    /// `<meta name="author">` (or `article:author`), if any.
    pub author: Option<String>,
    /// The HTML of the main content, chosen readability-style
    /// ([`crate::formats::main_html`]).
    pub main_html: String,
    /// Absolute `http(s)` links without fragments, in document order, deduplicated.
    pub links: Vec<Url>,
    /// `<meta name="robots" content="noindex">`: not ingested.
    pub noindex: bool,
    /// `nofollow` there: links not followed.
    pub nofollow: bool,
}

fn selector(css: &str) -> Selector {
    Selector::parse(css).expect("a valid selector")
}

/// Parses `html` fetched from `base`.
pub fn parse(html: &str, base: &Url) -> Page {
    let doc = Html::parse_document(html);
    let meta = |name: &str| {
        doc.select(&selector(&format!(r#"meta[name="{name}"], meta[property="{name}"]"#)))
            .find_map(|m| m.value().attr("content"))
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
    };
    let title = meta("og:title")
        .or_else(|| doc.select(&selector("title")).next().map(|t| t.text().collect::<String>().trim().to_owned()))
        .or_else(|| doc.select(&selector("h1")).next().map(|t| t.text().collect::<String>().trim().to_owned()))
        .unwrap_or_default();
    let author = meta("author").or_else(|| meta("article:author"));
    let robots = meta("robots").unwrap_or_default().to_ascii_lowercase();
    let main_html = crate::formats::main_html(&doc).unwrap_or_else(|| html.to_owned());
    let base = doc
        .select(&selector("base[href]"))
        .next()
        .and_then(|b| b.value().attr("href"))
        .and_then(|href| base.join(href).ok())
        .unwrap_or_else(|| base.clone());
    let mut links = Vec::new();
    for a in doc.select(&selector("a[href]")) {
        if a.value().attr("rel").is_some_and(|rel| rel.split_whitespace().any(|r| r == "nofollow")) {
            continue;
        }
        let Some(mut url) = a.value().attr("href").and_then(|href| base.join(href.trim()).ok()) else { continue };
        if !matches!(url.scheme(), "http" | "https") {
            continue;
        }
        url.set_fragment(None);
        if !links.contains(&url) {
            links.push(url);
        }
    }
    Page { title, author, main_html, links, noindex: robots.contains("noindex"), nofollow: robots.contains("nofollow") }
}

/// The page URLs of a sitemap (`<urlset>`) or the sitemaps of a sitemap index.
pub(crate) fn sitemap_locations(xml: &str) -> Vec<String> {
    let doc = Html::parse_document(xml);
    doc.select(&selector("loc"))
        .map(|l| l.text().collect::<String>().trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// True for a sitemap index (its locations are more sitemaps).
pub(crate) fn is_sitemap_index(xml: &str) -> bool {
    xml.contains("<sitemapindex")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_title_author_main_and_links() {
        let base = Url::parse("https://example.com/blog/post.html").unwrap();
        let html = r#"<html><head><title> A post </title><meta name="author" content="Ada">
            <meta name="robots" content="index"></head>
            <body><nav><a href="/">home</a></nav>
            <article><h1>A post</h1><p>Text <a href="other.html#x">other</a> <a href="other.html">again</a>
            <a href="mailto:a@b.c">mail</a> <a rel="nofollow" href="/ads">ad</a></p></article></body></html>"#;
        let page = parse(html, &base);
        assert_eq!(page.title, "A post");
        assert_eq!(page.author.as_deref(), Some("Ada"));
        assert!(page.main_html.contains("<h1>A post</h1>") && !page.main_html.contains("<nav>"));
        let links: Vec<&str> = page.links.iter().map(Url::as_str).collect();
        assert_eq!(links, ["https://example.com/", "https://example.com/blog/other.html"]);
        assert!(!page.noindex && !page.nofollow);
    }

    #[test]
    fn reads_sitemaps() {
        let xml = r#"<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
            <url><loc>https://example.com/a</loc></url><url><loc> https://example.com/b </loc></url></urlset>"#;
        assert_eq!(sitemap_locations(xml), ["https://example.com/a", "https://example.com/b"]);
        assert!(!is_sitemap_index(xml));
        assert!(is_sitemap_index("<sitemapindex><sitemap><loc>x</loc></sitemap></sitemapindex>"));
    }
}
