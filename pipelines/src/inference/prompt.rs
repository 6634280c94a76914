//! The prompt's passages: numbered with their headings within the
//! generator's budget, and the citations an answer's markers name.

use twinflow_models::Generator;
use twinflow_schemas::api::{Citation, SearchHit};
use twinflow_schemas::config::PassageOrder;

use super::grounding;

/// Tokens kept free per passage (BPE merges across passage boundaries).
const PER_PASSAGE: usize = 4;

/// The numbered passages that fit in `budget` tokens, numbered best first
/// and written in `order`; the worst placed one is cut (at a word) to fit
/// when a whole one does not.
pub(super) fn assemble(
    generator: &dyn Generator,
    candidates: &[(f32, SearchHit)],
    budget: usize,
    order: PassageOrder,
) -> (String, Vec<(f32, SearchHit)>) {
    let mut passages: Vec<String> = Vec::new();
    let mut used = 0;
    let mut placed = Vec::new();
    for (score, hit) in candidates {
        let heading = heading(placed.len() + 1, hit.sources.first());
        let passage = format!("{heading}{}\n\n", hit.text.trim());
        let cost = generator.count_tokens(&passage) + PER_PASSAGE;
        if used + cost <= budget {
            used += cost;
            passages.push(passage);
            placed.push((*score, hit.clone()));
            continue;
        }
        // Cut this passage to what is left, if enough is left to be useful.
        let left = budget - used;
        if left >= 48 {
            let words: Vec<&str> = hit.text.split_whitespace().collect();
            let (mut lo, mut hi) = (0, words.len());
            while lo < hi {
                let mid = (lo + hi).div_ceil(2);
                let cut = format!("{heading}{} …\n\n", words[..mid].join(" "));
                if generator.count_tokens(&cut) + PER_PASSAGE <= left { lo = mid } else { hi = mid - 1 }
            }
            if lo > 0 {
                passages.push(format!("{heading}{} …\n\n", words[..lo].join(" ")));
                placed.push((*score, hit.clone()));
            }
        }
        break;
    }
    if order == PassageOrder::BestLast {
        passages.reverse();
    }
    (passages.concat(), placed)
}

/// A passage's heading in the prompt: its marker, its document's title, the
/// author, and the pages of a paged document (`[2] Report (Ada), pp. 3–4`).
fn heading(marker: usize, source: Option<&twinflow_schemas::api::ChunkSource>) -> String {
    let Some(source) = source else { return format!("[{marker}]\n") };
    let mut heading = format!("[{marker}] {}", source.title);
    if !source.author.is_empty() {
        heading.push_str(&format!(" ({})", source.author));
    }
    match (source.page_start, source.page_end) {
        (Some(first), Some(last)) if last > first => heading.push_str(&format!(", pp. {first}\u{2013}{last}")),
        (Some(page), _) => heading.push_str(&format!(", p. {page}")),
        _ => {}
    }
    heading.push('\n');
    heading
}

/// The numbers `n` of every `[n]` (also `[n, m]`, `[n][m]`) in `answer`.
pub fn cited_markers(answer: &str) -> Vec<usize> {
    let mut markers = Vec::new();
    let mut rest = answer;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find(']') else { break };
        let inside = &rest[..close];
        if grounding::is_marker(inside) {
            markers.extend(inside.split(',').filter_map(|p| p.trim().parse::<usize>().ok()));
        }
        rest = &rest[close + 1..];
    }
    markers.sort_unstable();
    markers.dedup();
    markers
}

/// The citations of the prompt's passages; `cited` marks those the answer cites.
pub(super) fn citations(placed: &[(f32, SearchHit)], cited: &[usize]) -> Vec<Citation> {
    placed
        .iter()
        .enumerate()
        .map(|(i, (score, hit))| {
            let source = hit.sources.first();
            Citation {
                marker: i + 1,
                cited: cited.contains(&(i + 1)),
                chunk_id: hit.chunk_id,
                doc_id: source.map(|s| s.doc_id.clone()).unwrap_or_default(),
                title: source.map(|s| s.title.clone()).unwrap_or_default(),
                url: source.map(|s| s.url.clone()).unwrap_or_default(),
                author: source.map(|s| s.author.clone()).unwrap_or_default(),
                char_start: source.map_or(0, |s| s.char_start),
                char_end: source.map_or(0, |s| s.char_end),
                page_start: source.and_then(|s| s.page_start),
                page_end: source.and_then(|s| s.page_end),
                score: *score,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::rag::tests::Words;

    #[test]
    fn passage_headings_name_the_title_the_author_and_the_pages() {
        let source = |author: &str, pages: Option<(u32, u32)>| twinflow_schemas::api::ChunkSource {
            doc_id: "file:report.pdf".into(),
            ordinal: 0,
            char_start: 0,
            char_end: 1,
            page_start: pages.map(|p| p.0),
            page_end: pages.map(|p| p.1),
            title: "Report".into(),
            url: String::new(),
            author: author.into(),
            kind: twinflow_schemas::DocumentKind::Article,
        };
        assert_eq!(heading(2, Some(&source("Ada", Some((3, 4))))), "[2] Report (Ada), pp. 3\u{2013}4\n");
        assert_eq!(heading(1, Some(&source("", Some((5, 5))))), "[1] Report, p. 5\n");
        assert_eq!(heading(1, Some(&source("Ada", None))), "[1] Report (Ada)\n");
        assert_eq!(heading(3, None), "[3]\n");
    }

    /// Markers follow the rank; the order only moves the best passage next to
    /// the question or away from it, and the cut one stays the worst placed.
    #[test]
    fn passages_are_numbered_by_rank_in_either_order() {
        let hit = |id: u8, text: String| {
            let hit = SearchHit {
                chunk_id: twinflow_schemas::Hash128(u128::from(id)),
                score: 1.0 / f32::from(id),
                vector_score: None,
                bm25_score: None,
                text,
                sources: Vec::new(),
            };
            (hit.score, hit)
        };
        let long = format!("third{}", " word".repeat(100));
        let candidates = [hit(1, "best one".into()), hit(2, "second one".into()), hit(3, "third one".into())];
        let (first, placed) = assemble(&Words(""), &candidates, 1000, PassageOrder::BestFirst);
        assert_eq!(first, "[1]\nbest one\n\n[2]\nsecond one\n\n[3]\nthird one\n\n");
        let (last, placed_last) = assemble(&Words(""), &candidates, 1000, PassageOrder::BestLast);
        assert_eq!(last, "[3]\nthird one\n\n[2]\nsecond one\n\n[1]\nbest one\n\n");
        assert_eq!(placed, placed_last);
        // Room for two whole passages and part of a long third: the cut one is still [3],
        // written first when the best is last.
        let candidates = [candidates[0].clone(), candidates[1].clone(), hit(3, long)];
        let (cut, placed) = assemble(&Words(""), &candidates, 2 * (3 + PER_PASSAGE) + 48, PassageOrder::BestLast);
        assert_eq!(placed.len(), 3);
        assert!(
            cut.starts_with("[3]\nthird word") && cut.ends_with(" \u{2026}\n\n[2]\nsecond one\n\n[1]\nbest one\n\n"),
            "{cut}"
        );
    }

    #[test]
    fn markers_are_read_from_brackets_only() {
        assert_eq!(cited_markers("Paris [1], and also [2, 3][3]. Not [a] or [ ]."), vec![1, 2, 3]);
        assert!(cited_markers("no citations [here").is_empty());
    }
}
