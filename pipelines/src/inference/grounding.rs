//! Grounded answers: each sentence of a generated answer is tied to the
//! passages of its prompt that support it, by the search encoder, so that an
//! answer says only what its passages say and cites where.
//!
//! ```text
//!  answer   ─ sentences (UAX #29), markers removed ─┐
//!  passages ─ sentences ────────────────────────────┼─ one embedding batch ─ cosines
//!  question ────────────────────────────────────────┘
//!  each answer sentence ─ passages whose closest sentence ≥ min_support? ─ yes: "sentence [i][j]"
//!                                                                          └ no: dropped
//!  no sentence left ─▶ extractive: from each of the first two passages, its sentence closest to the question, quoted
//! ```
//!
//! A 135M-parameter generator seldom cites and often adds what no passage
//! says; attribution by similarity makes every kept sentence cite its
//! support whatever the generator did with the markers.

use twinflow_dataflow::{Embedder, cosine};
use twinflow_schemas::api::Grounding;
use unicode_segmentation::UnicodeSegmentation;

/// Passage sentences compared per passage (the first ones).
const SENTENCES_PER_PASSAGE: usize = 64;
/// Markers a kept sentence cites at most (the best supporting passages).
const MARKERS_PER_SENTENCE: usize = 2;
/// Sentences an extractive answer quotes (one from each of the first passages).
const EXTRACTED: usize = 2;

/// An answer after grounding.
#[derive(Clone, Debug, PartialEq)]
pub struct Grounded {
    pub answer: String,
    /// The markers (1-based) the answer cites.
    pub cited: Vec<usize>,
    pub report: Grounding,
}

/// The sentences of `text`, trimmed, with citation markers removed; pieces
/// without a word of two letters (a lone marker, a list bullet) are left out.
pub fn sentences(text: &str) -> Vec<String> {
    text.split_sentence_bounds()
        .flat_map(|s| s.split('\n'))
        .map(|s| collapse(&strip_markers(s)))
        .filter(|s| s.unicode_words().any(|w| w.chars().filter(|c| c.is_alphabetic()).count() >= 2))
        .collect()
}

/// `text` without its `[n]` / `[n, m]` markers.
fn strip_markers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find(']') {
            Some(close) if is_marker(&after[..close]) => rest = &after[close + 1..],
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether `inside` (what stands between `[` and `]`) is a citation marker:
/// numbers separated by commas.
pub(super) fn is_marker(inside: &str) -> bool {
    inside.split(',').all(|p| !p.trim().is_empty() && p.trim().chars().all(|c| c.is_ascii_digit()))
}

fn collapse(text: &str) -> String {
    let mut out = text.split_whitespace().collect::<Vec<_>>().join(" ");
    // "word ." left by a removed marker.
    for mark in [" .", " ,", " ;", " !", " ?"] {
        out = out.replace(mark, &mark[1..]);
    }
    out
}

/// Grounds `answer` (generated for `question`) in `passages` (marker `i + 1`
/// is `passages[i]`): see the module's documentation. Fails only when the
/// encoder does.
pub fn ground(
    question: &str,
    answer: &str,
    passages: &[String],
    embedder: &dyn Embedder,
    min_support: f32,
) -> Result<Grounded, String> {
    let generated = sentences(answer);
    let passage_sentences: Vec<Vec<String>> =
        passages.iter().map(|p| sentences(p).into_iter().take(SENTENCES_PER_PASSAGE).collect()).collect();
    let mut texts: Vec<&str> = vec![question];
    texts.extend(generated.iter().map(String::as_str));
    texts.extend(passage_sentences.iter().flatten().map(String::as_str));
    let vectors = embedder.embed_batch(&texts).map_err(|e| format!("embedding the answer's sentences: {e}"))?;
    if vectors.len() != texts.len() {
        return Err(format!("the encoder returned {} vectors for {} sentences", vectors.len(), texts.len()));
    }
    let (question_vector, rest) = vectors.split_at(1);
    let (answer_vectors, mut passage_vectors) = rest.split_at(generated.len());
    // (marker, sentence, vector) of every passage sentence.
    let mut candidates = Vec::new();
    for (i, sentences) in passage_sentences.iter().enumerate() {
        let (these, later) = passage_vectors.split_at(sentences.len());
        candidates.extend(sentences.iter().zip(these).map(|(s, v)| (i + 1, s, v)));
        passage_vectors = later;
    }

    let mut kept = Vec::new();
    let mut cited = Vec::new();
    for (sentence, vector) in generated.iter().zip(answer_vectors) {
        // Each passage's support: the similarity of its closest sentence.
        let mut support: Vec<(usize, f32)> = (1..=passages.len())
            .map(|marker| {
                let best = candidates
                    .iter()
                    .filter(|(m, ..)| *m == marker)
                    .map(|(_, _, v)| cosine(vector, v))
                    .fold(f32::NEG_INFINITY, f32::max);
                (marker, best)
            })
            .filter(|(_, s)| *s >= min_support)
            .collect();
        support.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if support.is_empty() {
            continue;
        }
        let markers: Vec<usize> = support.iter().take(MARKERS_PER_SENTENCE).map(|(m, _)| *m).collect();
        kept.push(format!("{sentence} {}", markers.iter().map(|m| format!("[{m}]")).collect::<String>()));
        cited.extend(markers);
    }
    let supported = kept.len();
    let mode = if kept.is_empty() && !candidates.is_empty() {
        // Nothing the generator said is supported: quote, from each of the
        // first passages (the best ranked), its sentence closest to the question.
        for marker in 1..=passages.len() {
            if kept.len() == EXTRACTED {
                break;
            }
            let best = candidates
                .iter()
                .filter(|(m, ..)| *m == marker)
                .map(|(_, s, v)| (cosine(&question_vector[0], v), *s))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            if let Some((_, sentence)) = best
                && !kept.iter().any(|k| k.contains(sentence.as_str()))
            {
                kept.push(format!("\u{201c}{sentence}\u{201d} [{marker}]"));
                cited.push(marker);
            }
        }
        "extractive"
    } else {
        "generated"
    };
    cited.sort_unstable();
    cited.dedup();
    Ok(Grounded {
        answer: kept.join(" "),
        cited,
        report: Grounding {
            mode: mode.into(),
            generated_sentences: generated.len(),
            supported,
            min_support,
            raw_answer: answer.to_owned(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_lose_their_markers_and_fragments() {
        let answer = "The answer is: rivers flow [1]. Boats float on them [1, 2].\n[3]\n- Taxes rose.";
        assert_eq!(sentences(answer), ["The answer is: rivers flow.", "Boats float on them.", "- Taxes rose."]);
        assert_eq!(strip_markers("keep [this] and [a1] but not [12]"), "keep [this] and [a1] but not ");
    }

    #[test]
    fn supported_sentences_cite_their_passages_and_the_rest_go() {
        let embedder = twinflow_dataflow::HashingEmbedder::new(256);
        let passages = vec![
            "Rivers carry boats to the sea. The water is cold.".to_owned(),
            "Taxes on imports rose in the spring. Farmers paid more.".to_owned(),
        ];
        let answer = "Rivers carry boats to the sea. Taxes on imports rose in the spring [1]. Dragons guard the gold.";
        let grounded = ground("what do rivers carry?", answer, &passages, &embedder, 0.9).unwrap();
        assert_eq!(grounded.answer, "Rivers carry boats to the sea. [1] Taxes on imports rose in the spring. [2]");
        assert_eq!(grounded.cited, [1, 2]);
        assert_eq!(
            (grounded.report.mode.as_str(), grounded.report.generated_sentences, grounded.report.supported),
            ("generated", 3, 2)
        );
        assert_eq!(grounded.report.raw_answer, answer);

        // Nothing supported: from each passage in rank order, its sentence closest to the question, quoted.
        let grounded =
            ground("Farmers paid more taxes in the spring", "I do not know.", &passages, &embedder, 0.9).unwrap();
        assert_eq!(grounded.report.mode, "extractive");
        assert_eq!(grounded.answer, "\u{201c}The water is cold.\u{201d} [1] \u{201c}Farmers paid more.\u{201d} [2]");
        assert_eq!(grounded.cited, [1, 2]);
        assert_eq!(grounded.report.supported, 0);
    }
}
