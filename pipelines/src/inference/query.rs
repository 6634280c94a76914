//! The question's side of an answer: the filters it names (self-query) and
//! the generator's rephrasings of it (expansion).

use std::collections::HashMap;
use std::ops::ControlFlow;

use twinflow_models::{ChatMessage, GenerateParams, Generator};
use twinflow_schemas::DocumentKind;
use twinflow_schemas::api::SearchFilter;

/// Filters a question names: an author of the live documents (full name, or
/// a surname that only one author has) and a kind ("articles", "posts",
/// "code"). Ambiguous mentions give no filter.
pub fn self_query(question: &str, authors: &[(String, usize)], kinds: &[(DocumentKind, usize)]) -> SearchFilter {
    // Possessives count as the name: "Lincoln's" is "lincoln".
    let words: Vec<String> = question
        .split(|c: char| !c.is_alphanumeric() && c != '\'' && c != '\u{2019}')
        .map(|w| w.trim_end_matches("'s").trim_end_matches("\u{2019}s").trim_matches(['\'', '\u{2019}']))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let text = words.join(" ");
    let contains_phrase = |phrase: &str| {
        let phrase: Vec<String> =
            phrase.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
        !phrase.is_empty() && format!(" {text} ").contains(&format!(" {} ", phrase.join(" ")))
    };
    let mut filter = SearchFilter::default();
    let full: Vec<&String> = authors.iter().map(|(a, _)| a).filter(|a| contains_phrase(a)).collect();
    let author = if full.len() == 1 {
        Some(full[0].clone())
    } else if full.is_empty() {
        // Surnames (the last word of a name, at least 3 letters) that only one author has.
        let surname = |a: &str| a.split_whitespace().last().map(str::to_lowercase).filter(|s| s.chars().count() >= 3);
        let mut by_surname: HashMap<String, Vec<&String>> = HashMap::new();
        for (a, _) in authors {
            if let Some(s) = surname(a) {
                by_surname.entry(s).or_default().push(a);
            }
        }
        let named: Vec<&Vec<&String>> = by_surname.iter().filter(|(s, _)| words.contains(s)).map(|(_, a)| a).collect();
        match named.as_slice() {
            [only] if only.len() == 1 => Some(only[0].clone()),
            _ => None,
        }
    } else {
        None
    };
    filter.author = author;
    let kind_words: [(&[&str], DocumentKind); 3] = [
        (&["article", "articles", "essay", "essays"], DocumentKind::Article),
        (&["post", "posts", "tweet", "tweets"], DocumentKind::Post),
        (&["code", "repository", "repositories", "repo", "repos"], DocumentKind::Repository),
    ];
    let named_kinds: Vec<DocumentKind> = kind_words
        .iter()
        .filter(|(ws, _)| ws.iter().any(|w| words.iter().any(|x| x == w)))
        .map(|(_, k)| *k)
        .filter(|k| kinds.iter().any(|(have, n)| have == k && *n > 0))
        .collect();
    // Only a kind the index has, and only when it is not the only kind (then it filters nothing).
    if let [kind] = named_kinds.as_slice()
        && kinds.iter().filter(|(_, n)| *n > 0).count() > 1
    {
        filter.kind = Some(*kind);
    }
    filter
}

/// Up to `n` rephrasings of `question` written by the generator (none if it fails).
pub(super) fn expand(generator: &dyn Generator, question: &str, n: usize) -> Vec<String> {
    let messages = [
        ChatMessage::new("system", "You rewrite questions for a search engine."),
        ChatMessage::new(
            "user",
            format!("Write {n} different ways to ask this question, one per line, without numbering:\n{question}"),
        ),
    ];
    let params = GenerateParams { max_tokens: 40 * n, ..GenerateParams::default() };
    let text = match generator.generate(&messages, &params, &mut |_| ControlFlow::Continue(())) {
        Ok(generation) => generation.text,
        Err(e) => {
            tracing::warn!(target: "rag", error = %e, "query expansion failed; searching the question alone");
            return Vec::new();
        }
    };
    let mut variants: Vec<String> = Vec::new();
    for line in text.lines() {
        let line =
            line.trim().trim_start_matches(|c: char| c.is_ascii_digit() || matches!(c, '.' | ')' | '-' | '*' | ' '));
        let line = line.trim().trim_matches('"').trim();
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        if line.len() >= 8 && !same(line, question) && !variants.iter().any(|v| same(v, line)) {
            variants.push(line.to_owned());
        }
        if variants.len() == n {
            break;
        }
    }
    variants
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_query_finds_unambiguous_authors_and_kinds() {
        let authors = vec![
            ("Abraham Lincoln".to_owned(), 4),
            ("Theodore Roosevelt".to_owned(), 8),
            ("Franklin D. Roosevelt".to_owned(), 12),
        ];
        let kinds = vec![(DocumentKind::Article, 20), (DocumentKind::Post, 4)];
        let f = self_query("What was Lincoln's view of the union?", &authors, &kinds);
        assert_eq!(f.author.as_deref(), Some("Abraham Lincoln"));
        // Two Roosevelts: the surname alone is ambiguous; the full name is not.
        assert_eq!(self_query("What did Roosevelt think of banks?", &authors, &kinds).author, None);
        let f = self_query("In his posts, what did Franklin D. Roosevelt say?", &authors, &kinds);
        assert_eq!(f.author.as_deref(), Some("Franklin D. Roosevelt"));
        assert_eq!(f.kind, Some(DocumentKind::Post));
        // A kind the index lacks filters nothing.
        assert_eq!(self_query("show me the code", &authors, &kinds).kind, None);
        assert!(self_query("taxes and tariffs", &authors, &kinds).is_empty());
    }
}
