//! Grounded answers: each sentence of a generated answer is tied to the
//! passages of its prompt that support it, so that an answer says only what
//! its passages say and cites where.
//!
//! ```text
//!  answer   ─ sentences (UAX #29), markers removed ─┐
//!  passages ─ sentences ────────────────────────────┼─ one embedding batch ─ cosines
//!  question ────────────────────────────────────────┘      + content words, weighed by rarity among the passages
//!  each answer sentence (of three content words or more) ─ a passage sentence within min_support cosine that holds min_overlap of its words?
//!                           ├ yes: "sentence [i][j]" (the best two passages)
//!                           └ no: dropped
//!  quotes: from each of the first two passages, its sentence closest to the question,
//!          and from up to two later passages a sentence closer to it than both
//!  no kept sentence rests on a quoted passage (or none is kept) ─▶ extractive: the quotes
//!  else ─▶ generated: the kept sentences, then the quotes of passages they do not cite (the evidence)
//! ```
//!
//! A 135M-parameter generator seldom cites and often adds what no passage
//! says; attribution makes every kept sentence cite its support whatever the
//! generator did with the markers. The encoder's cosine alone is lenient: a
//! sentence sharing a passage's subject ("Debian … ") passes it while saying
//! what the passage does not ("sudo apt-cacher --one"), so a supporting
//! sentence must also hold most of the answer sentence's content words,
//! the rare ones (among the prompt's passages) weighing most.

use std::collections::{HashMap, HashSet};

use twinflow_dataflow::text::content_words;
use twinflow_dataflow::{Embedder, cosine};
use twinflow_schemas::api::Grounding;
use twinflow_schemas::config::RagConfig;
use unicode_segmentation::UnicodeSegmentation;

/// Passage sentences compared per passage (the first ones).
const SENTENCES_PER_PASSAGE: usize = 64;
/// Markers a kept sentence cites at most (the best supporting passages).
const MARKERS_PER_SENTENCE: usize = 2;
/// Sentences an extractive answer quotes from the first passages (one each).
const EXTRACTED: usize = 2;
/// Sentences it quotes at most from later passages, each closer to the
/// question than any quote from the first ones.
const LATER_QUOTES: usize = 2;
/// Content words (with a letter) a generated sentence needs to be kept while
/// `min_overlap` is on: with fewer ("e2label", "Yes, groff.") it names a
/// thing but states nothing its words could be checked for (a passage
/// holding the name would "support" it whatever the question was).
const MIN_CLAIM_WORDS: usize = 3;

/// When a passage sentence supports an answer sentence.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SupportRule {
    /// The least cosine between the two (the search encoder).
    pub min_cosine: f32,
    /// The least share of the answer sentence's content words the passage
    /// sentence holds, each weighed by its rarity among the prompt's
    /// passages (0: the cosine alone decides).
    pub min_overlap: f32,
}

impl SupportRule {
    /// `[rag] min_support` and `min_overlap`.
    pub fn of(config: &RagConfig) -> Self {
        Self { min_cosine: config.min_support, min_overlap: config.min_overlap }
    }
}

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
        .filter(|s| says_something(s))
        .collect()
}

/// Whether `piece` of text has a word of two letters (not a lone marker,
/// a list bullet or a number): what counts as a sentence.
pub(super) fn says_something(piece: &str) -> bool {
    piece.unicode_words().any(|w| w.chars().filter(|c| c.is_alphabetic()).count() >= 2)
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

/// A passage sentence as support is judged: its marker, text, vector and content words.
struct PassageSentence {
    marker: usize,
    text: String,
    vector: Vec<f32>,
    words: HashSet<String>,
}

/// Answer sentences judged against the sentences of a prompt's passages
/// (one embedding batch for the question, the answer and the passages).
struct Supports {
    question: Option<Vec<f32>>,
    candidates: Vec<PassageSentence>,
    /// Per answer sentence, per passage (marker − 1): the best cosine among
    /// the passage's sentences that support it (`None`: none does).
    by_passage: Vec<Vec<Option<f32>>>,
}

impl Supports {
    fn judge(
        question: Option<&str>,
        said: &[String],
        passages: &[String],
        embedder: &dyn Embedder,
        rule: SupportRule,
    ) -> Result<Self, String> {
        let passage_sentences: Vec<Vec<String>> =
            passages.iter().map(|p| sentences(p).into_iter().take(SENTENCES_PER_PASSAGE).collect()).collect();
        let mut texts: Vec<&str> = question.into_iter().collect();
        texts.extend(said.iter().map(String::as_str));
        texts.extend(passage_sentences.iter().flatten().map(String::as_str));
        if texts.is_empty() {
            return Ok(Self { question: None, candidates: Vec::new(), by_passage: Vec::new() });
        }
        let mut vectors =
            embedder.embed_batch(&texts).map_err(|e| format!("embedding the answer's sentences: {e}"))?.into_iter();
        if vectors.len() != texts.len() {
            return Err(format!("the encoder returned {} vectors for {} sentences", vectors.len(), texts.len()));
        }
        let question = question.and_then(|_| vectors.next());
        let said_vectors: Vec<Vec<f32>> = vectors.by_ref().take(said.len()).collect();
        let candidates: Vec<PassageSentence> = passage_sentences
            .into_iter()
            .enumerate()
            .flat_map(|(i, sentences)| sentences.into_iter().map(move |text| (i + 1, text)))
            .zip(vectors)
            .map(|((marker, text), vector)| {
                let words = content_words(&text).into_iter().collect();
                PassageSentence { marker, text, vector, words }
            })
            .collect();

        // A word's weight: its rarity among the passages, `ln((n + 1) / (holding + 0.5))`
        // (a word no passage holds weighs most, one every passage holds least).
        let mut holding: HashMap<String, usize> = HashMap::new();
        for passage in passages {
            for word in content_words(passage) {
                *holding.entry(word).or_default() += 1;
            }
        }
        let n = passages.len() as f32;
        let weight = |word: &str| ((n + 1.0) / (holding.get(word).copied().unwrap_or(0) as f32 + 0.5)).ln();
        let by_passage = said
            .iter()
            .zip(&said_vectors)
            .map(|(sentence, vector)| {
                let words: Vec<(String, f32)> =
                    content_words(sentence).into_iter().map(|w| (w.clone(), weight(&w))).collect();
                let total: f32 = words.iter().map(|(_, w)| w).sum();
                let overlap = |held: &HashSet<String>| {
                    if total <= 0.0 {
                        return 1.0;
                    }
                    words.iter().filter(|(w, _)| held.contains(w)).map(|(_, w)| w).sum::<f32>() / total
                };
                let mut best = vec![None::<f32>; passages.len()];
                for candidate in &candidates {
                    let similarity = cosine(vector, &candidate.vector);
                    if similarity >= rule.min_cosine
                        && overlap(&candidate.words) >= rule.min_overlap
                        && best[candidate.marker - 1].is_none_or(|b| similarity > b)
                    {
                        best[candidate.marker - 1] = Some(similarity);
                    }
                }
                best
            })
            .collect();
        Ok(Self { question, candidates, by_passage })
    }
}

/// What an extractive answer quotes, in marker order: from each of the first
/// passages (the best ranked), its sentence closest to the question; then from
/// up to [`LATER_QUOTES`] later passages, the best first, a sentence closer to
/// the question than both of those: retrieval placed its passage lower, but
/// its words answer more directly than the quotes above it.
fn quotes(supports: &Supports, passages: usize) -> Vec<(usize, &str)> {
    let question = supports.question.as_deref().unwrap_or_default();
    let closest = |marker: usize| {
        supports
            .candidates
            .iter()
            .filter(|c| c.marker == marker)
            .map(|c| (cosine(question, &c.vector), c.text.as_str()))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    };
    let mut first: Vec<(usize, f32, &str)> = Vec::new();
    let mut later: Vec<(usize, f32, &str)> = Vec::new();
    for marker in 1..=passages {
        let Some((similarity, sentence)) = closest(marker) else { continue };
        if first.iter().chain(&later).any(|(_, _, quoted)| quoted.contains(sentence)) {
            continue;
        }
        if first.len() < EXTRACTED {
            first.push((marker, similarity, sentence));
        } else {
            later.push((marker, similarity, sentence));
        }
    }
    let bar = first.iter().map(|(_, s, _)| *s).fold(f32::NEG_INFINITY, f32::max);
    later.retain(|(_, s, _)| *s > bar);
    later.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    later.truncate(LATER_QUOTES);
    first.extend(later);
    first.sort_by_key(|(marker, _, _)| *marker);
    first.into_iter().map(|(marker, _, sentence)| (marker, sentence)).collect()
}

/// The kept `(sentence, with its markers)` as one answer: a space between two
/// sentences where the first ends as sentences do and the next begins with a
/// capital, a new line otherwise (after a fragment such as "… is:", before
/// "grotty translates …"), so that the answer splits into the sentences that
/// were judged again.
fn joined(kept: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (sentence, marked)) in kept.iter().enumerate() {
        if i > 0 {
            let ended = kept[i - 1].0.trim_end_matches(['"', '\'', ')', '\u{201d}']).ends_with(['.', '!', '?']);
            let capital = sentence.chars().next().is_some_and(char::is_uppercase);
            out.push(if ended && capital { ' ' } else { '\n' });
        }
        out.push_str(marked);
    }
    out
}

/// A passage sentence quoted as an answer's: `(sentence, “sentence” [marker])`.
fn quotation(marker: usize, sentence: &str) -> (String, String) {
    (sentence.to_owned(), format!("\u{201c}{sentence}\u{201d} [{marker}]"))
}

/// The content words of `sentence` that hold a letter.
fn claim_words(sentence: &str) -> usize {
    content_words(sentence).iter().filter(|w| w.chars().any(char::is_alphabetic)).count()
}

/// For each of `said`, the markers of the passages that support it, judged
/// by `rule` with `passages` as the prompt (nothing embedded when `said` is
/// empty).
pub fn supporting_passages(
    said: &[String],
    passages: &[String],
    embedder: &dyn Embedder,
    rule: SupportRule,
) -> Result<Vec<Vec<usize>>, String> {
    if said.is_empty() {
        return Ok(Vec::new());
    }
    let supports = Supports::judge(None, said, passages, embedder, rule)?;
    Ok(supports
        .by_passage
        .iter()
        .map(|per| per.iter().enumerate().filter(|(_, s)| s.is_some()).map(|(i, _)| i + 1).collect())
        .collect())
}

/// Grounds `answer` (generated for `question`) in `passages` (marker `i + 1`
/// is `passages[i]`): see the module's documentation; with `evidence`, an
/// answer that stands is followed by the quotes of the passages it does not
/// cite. Fails only when the encoder does.
pub fn ground(
    question: &str,
    answer: &str,
    passages: &[String],
    embedder: &dyn Embedder,
    rule: SupportRule,
    evidence: bool,
) -> Result<Grounded, String> {
    let generated = sentences(answer);
    let supports = Supports::judge(Some(question), &generated, passages, embedder, rule)?;
    let mut kept = Vec::new();
    let mut cited = Vec::new();
    for (sentence, per_passage) in generated.iter().zip(&supports.by_passage) {
        // A question asks; it claims nothing a passage could support ("What is
        // meant by saying that a package Depends …?" echoes a heading). One
        // that ends in a quotation or a bracket names a title instead ("see
        // Section 6.10, "What's in the pool directory?")").
        if sentence.trim_end().ends_with('?') {
            continue;
        }
        if rule.min_overlap > 0.0 && claim_words(sentence) < MIN_CLAIM_WORDS {
            continue;
        }
        let mut support: Vec<(usize, f32)> =
            per_passage.iter().enumerate().filter_map(|(i, s)| s.map(|s| (i + 1, s))).collect();
        support.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if support.is_empty() {
            continue;
        }
        let markers: Vec<usize> = support.iter().take(MARKERS_PER_SENTENCE).map(|(m, _)| *m).collect();
        kept.push((
            sentence.clone(),
            format!("{sentence} {}", markers.iter().map(|m| format!("[{m}]")).collect::<String>()),
        ));
        cited.extend(markers);
    }
    let supported = kept.len();
    // The kept sentences stand when one of them rests on a passage the quotes
    // come from (the evidence closest to the question); resting only on
    // others, the generator answered from another subject's passage.
    let quoted = quotes(&supports, passages.len());
    let stands = cited.iter().any(|m| quoted.iter().any(|(q, _)| q == m));
    let mut evidence_markers = Vec::new();
    let mode = if stands || quoted.is_empty() {
        if evidence && stands {
            // The generator's sentences rest on one or two passages; the
            // quotes add what the other passages closest to the question say.
            for (marker, sentence) in &quoted {
                if !cited.contains(marker) && !kept.iter().any(|(said, _)| said == sentence) {
                    kept.push(quotation(*marker, sentence));
                    cited.push(*marker);
                    evidence_markers.push(*marker);
                }
            }
        }
        "generated"
    } else {
        kept = quoted.iter().map(|(marker, sentence)| quotation(*marker, sentence)).collect();
        cited = quoted.iter().map(|(marker, _)| *marker).collect();
        "extractive"
    };
    cited.sort_unstable();
    cited.dedup();
    Ok(Grounded {
        answer: joined(&kept),
        cited,
        report: Grounding {
            mode: mode.into(),
            generated_sentences: generated.len(),
            supported,
            min_support: rule.min_cosine,
            min_overlap: rule.min_overlap,
            evidence: evidence_markers,
            raw_answer: answer.to_owned(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const COSINE_ONLY: SupportRule = SupportRule { min_cosine: 0.9, min_overlap: 0.0 };

    /// How many of `said` a passage supports (among `markers`, or any).
    fn count_supported(
        said: &[String],
        passages: &[String],
        markers: Option<&[usize]>,
        embedder: &dyn Embedder,
        rule: SupportRule,
    ) -> Result<usize, String> {
        let supporting = supporting_passages(said, passages, embedder, rule)?;
        Ok(supporting.iter().filter(|m| m.iter().any(|m| markers.is_none_or(|among| among.contains(m)))).count())
    }

    #[test]
    fn sentences_lose_their_markers_and_fragments() {
        let answer = "The answer is: rivers flow [1]. Boats float on them [1, 2].\n[3]\n- Taxes rose.";
        assert_eq!(sentences(answer), ["The answer is: rivers flow.", "Boats float on them.", "- Taxes rose."]);
        assert_eq!(strip_markers("keep [this] and [a1] but not [12]"), "keep [this] and [a1] but not ");
    }

    #[test]
    fn kept_sentences_join_so_that_they_split_again() {
        let kept: Vec<(String, String)> = [
            ("The format is:", " [2]"),
            ("- a tar archive", " [1]"),
            ("It is old.", " [1]"),
            ("It works.", " [3]"),
            ("dpkg reads it.", " [2]"),
        ]
        .map(|(s, m)| (s.to_owned(), format!("{s}{m}")))
        .into();
        let answer = joined(&kept);
        assert_eq!(answer, "The format is: [2]\n- a tar archive [1]\nIt is old. [1] It works. [3]\ndpkg reads it. [2]");
        // The answer splits into the sentences that were judged, as an evaluation reads it.
        assert_eq!(
            sentences(&answer),
            ["The format is:", "- a tar archive", "It is old.", "It works.", "dpkg reads it."]
        );
    }

    #[test]
    fn supported_sentences_cite_their_passages_and_the_rest_go() {
        let embedder = twinflow_dataflow::HashingEmbedder::new(256);
        let passages = vec![
            "Rivers carry boats to the sea. The water is cold.".to_owned(),
            "Taxes on imports rose in the spring. Farmers paid more.".to_owned(),
        ];
        let answer = "Rivers carry boats to the sea. Taxes on imports rose in the spring [1]. Dragons guard the gold.";
        let grounded = ground("what do rivers carry?", answer, &passages, &embedder, COSINE_ONLY, false).unwrap();
        assert_eq!(grounded.answer, "Rivers carry boats to the sea. [1] Taxes on imports rose in the spring. [2]");
        assert_eq!(grounded.cited, [1, 2]);
        assert_eq!(
            (grounded.report.mode.as_str(), grounded.report.generated_sentences, grounded.report.supported),
            ("generated", 3, 2)
        );
        assert_eq!(grounded.report.raw_answer, answer);

        // A question is not kept, though a passage holds it word for word; a title that asks is.
        let asked = "Rivers carry boats to the sea? Taxes on imports rose in the spring (\"Why taxes?\").";
        let grounded = ground("what do rivers carry?", asked, &passages, &embedder, COSINE_ONLY, false).unwrap();
        assert_eq!(grounded.report.supported, 1, "{grounded:?}");
        assert!(grounded.answer.starts_with("Taxes on imports rose in the spring"), "{grounded:?}");

        // Nothing supported: from each passage in rank order, its sentence closest to the question, quoted.
        let grounded =
            ground("Farmers paid more taxes in the spring", "I do not know.", &passages, &embedder, COSINE_ONLY, true)
                .unwrap();
        assert_eq!(grounded.report.mode, "extractive");
        assert_eq!(grounded.answer, "\u{201c}The water is cold.\u{201d} [1] \u{201c}Farmers paid more.\u{201d} [2]");
        assert_eq!(grounded.cited, [1, 2]);
        assert_eq!(grounded.report.supported, 0);
    }

    #[test]
    fn an_answer_resting_only_on_passages_the_quotes_pass_over_is_quoted_instead() {
        let embedder = twinflow_dataflow::HashingEmbedder::new(256);
        let passages: Vec<String> =
            ["Rivers carry boats to the sea.", "Boats float on rivers.", "Dragons guard the gold in caves."]
                .map(str::to_owned)
                .into();
        let question = "What do rivers carry to the sea?";
        // Supported, but by the third passage alone, which is no closer to the question than the first two.
        let grounded =
            ground(question, "Dragons guard the gold in caves.", &passages, &embedder, COSINE_ONLY, false).unwrap();
        assert_eq!((grounded.report.mode.as_str(), grounded.report.supported), ("extractive", 1));
        assert_eq!(grounded.cited, [1, 2], "{}", grounded.answer);

        // One sentence resting on a quoted passage keeps the answer generated, the other sentences too.
        let answer = "Dragons guard the gold in caves. Rivers carry boats to the sea.";
        let grounded = ground(question, answer, &passages, &embedder, COSINE_ONLY, false).unwrap();
        assert_eq!(grounded.report.mode, "generated");
        assert_eq!(grounded.cited, [1, 3], "{}", grounded.answer);

        // With the evidence: the quote of the one quoted passage the answer does not cite follows it.
        let grounded = ground(question, answer, &passages, &embedder, COSINE_ONLY, true).unwrap();
        assert_eq!(
            grounded.answer,
            "Dragons guard the gold in caves. [3] Rivers carry boats to the sea. [1] \u{201c}Boats float on rivers.\u{201d} [2]"
        );
        assert_eq!((grounded.cited, grounded.report.evidence), (vec![1, 2, 3], vec![2]));
        // An answer quoted instead has no evidence after it.
        let grounded =
            ground(question, "Dragons guard the gold in caves.", &passages, &embedder, COSINE_ONLY, true).unwrap();
        assert_eq!(grounded.report.mode, "extractive");
        assert!(grounded.report.evidence.is_empty());
    }

    #[test]
    fn a_later_passage_closer_to_the_question_is_quoted_too() {
        let embedder = twinflow_dataflow::HashingEmbedder::new(256);
        let passages: Vec<String> = [
            "Rivers carry boats to the sea. The water is cold.",
            "Taxes on imports rose. Farmers paid more.",
            "Owls hunt at night.",
            "Farmers paid more taxes in the spring. Markets opened late.",
            "Farmers paid more taxes, and more again, in every spring of a long and dry decade.",
            "Farmers paid more taxes in the spring, they say.",
        ]
        .map(str::to_owned)
        .into();
        let question = "Farmers paid more taxes in the spring";
        let grounded = ground(question, "", &passages, &embedder, COSINE_ONLY, false).unwrap();
        // The first two, then the two later passages closest to the question
        // (not the owls: no closer than the quotes above), in marker order.
        assert_eq!(grounded.cited, [1, 2, 4, 6], "{}", grounded.answer);
        assert!(grounded.answer.contains("\u{201c}Farmers paid more taxes in the spring.\u{201d} [4]"));

        // Nothing later closer than the quotes: two quotes, as before.
        let grounded = ground("rivers and boats", "", &passages[..3], &embedder, COSINE_ONLY, false).unwrap();
        assert_eq!(grounded.cited, [1, 2]);
    }

    #[test]
    fn a_supporting_sentence_holds_the_rare_words_too() {
        // Every sentence shares the subject; only the words the question is about tell them apart.
        let embedder = twinflow_dataflow::HashingEmbedder::new(256);
        let passages = vec![
            "Debian is a free operating system. Debian is pronounced deb ee en.".to_owned(),
            "Debian ships apt and dpkg. Debian packages are built by volunteers.".to_owned(),
        ];
        let said = [
            "Debian is pronounced deb ee en, they say.".to_owned(),
            "Debian is pronounced with sudo apt-cacher everywhere.".to_owned(),
        ];
        let lenient = SupportRule { min_cosine: 0.3, min_overlap: 0.0 };
        let strict = SupportRule { min_cosine: 0.3, min_overlap: 0.5 };
        assert_eq!(count_supported(&said, &passages, None, &embedder, lenient).unwrap(), 2);
        assert_eq!(count_supported(&said, &passages, None, &embedder, strict).unwrap(), 1);

        // Only among the cited passages: the second does not hold the pronunciation.
        assert_eq!(count_supported(&said[..1], &passages, Some(&[2]), &embedder, strict).unwrap(), 0);

        // A name alone states nothing the words could check: supported, but kept only by the cosine alone.
        let answer = format!("{} Debian dpkg.", said.join(" "));
        let grounded = ground("How is Debian pronounced?", &answer, &passages, &embedder, strict, false).unwrap();
        assert_eq!(grounded.answer, "Debian is pronounced deb ee en, they say. [1]");
        assert_eq!((grounded.report.supported, grounded.report.min_overlap), (1, 0.5));
        let named = ["Debian dpkg.".to_owned()];
        assert_eq!(count_supported(&named, &passages, None, &embedder, strict).unwrap(), 1);
        let grounded = ground("What ships dpkg?", "Debian dpkg.", &passages, &embedder, lenient, false).unwrap();
        assert!(grounded.report.mode == "generated" && grounded.cited.contains(&2), "{grounded:?}");
    }
}
