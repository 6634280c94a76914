//! Dataset curation, as pure functions: the prompt that asks an LLM for
//! questions an extract answers and the parser of its reply, the
//! quality filter, near-duplicate removal with MinHash over word shingles,
//! and the chat format fine-tuning tools read.
//!
//! ```text
//!  extract ─▶ question_prompt ─▶ LLM ─▶ parse_questions ─▶ (question, extract)*
//!  samples ─▶ quality(...)  ─▶ MinHash signatures ─▶ LSH bands ─▶ Jaccard check ─▶ keep first of each near-duplicate group
//! ```

use std::collections::{HashMap, HashSet};

use twinflow_schemas::Hash128;
use unicode_segmentation::UnicodeSegmentation;

/// Version of the prompts below: part of the generation cache key, so a
/// new prompt regenerates every extract.
pub const PROMPT_VERSION: u32 = 2;

/// The system and user messages asking for `n` questions that `extract`
/// answers. Small models follow "one question per line" far more reliably
/// than a pair format, so the model writes the instructions and the
/// author's extract is the answer: the twin learns the author's voice, not
/// the model's.
pub fn question_prompt(extract: &str, n: usize) -> (String, String) {
    let system = "You write questions about texts.".to_owned();
    let user = format!(
        "Text:\n\"\"\"\n{extract}\n\"\"\"\n\nWrite {n} different questions that this text answers. \
         Write one question per line and nothing else."
    );
    (system, user)
}

/// The questions of a reply: lines holding a `?` (numbering and bullets
/// removed, cut after the first `?`), at least three words, no repeats.
pub fn parse_questions(reply: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in reply.lines() {
        let bare = line
            .trim()
            .trim_start_matches(|c: char| c.is_ascii_digit() || matches!(c, '.' | ')' | '-' | '*' | '•' | ':'))
            .trim();
        let bare = bare
            .strip_prefix("Question")
            .map_or(bare, |r| r.trim_start().trim_start_matches(|c: char| c.is_ascii_digit() || c == ':').trim());
        let Some(end) = bare.find('?') else { continue };
        let question = bare[..=end].trim().to_owned();
        if question.unicode_words().count() >= 3 && !out.iter().any(|q| q.eq_ignore_ascii_case(&question)) {
            out.push(question);
        }
    }
    out
}

/// Why a sample was dropped by [`quality`] (a plain type of `schemas`).
pub use twinflow_schemas::datasets::Rejection;

/// The quality filter: `None` keeps the sample.
pub fn quality(instruction: &str, answer: &str) -> Option<Rejection> {
    let (iw, aw) = (instruction.unicode_words().count(), answer.unicode_words().count());
    if iw < 3 || aw < 10 {
        return Some(Rejection::TooShort);
    }
    if iw > 120 || aw > 800 {
        return Some(Rejection::TooLong);
    }
    let text = format!("{instruction} {answer}");
    let letters: Vec<char> = text.chars().filter(|c| c.is_alphabetic()).collect();
    let latin = letters.iter().filter(|c| c.is_ascii_alphabetic() || ('\u{c0}'..='\u{24f}').contains(*c)).count();
    let control = text.chars().any(|c| c.is_control() && c != '\n' && c != '\t');
    if control || letters.is_empty() || (latin as f64) < 0.8 * letters.len() as f64 {
        return Some(Rejection::Charset);
    }
    if answer.trim().eq_ignore_ascii_case(instruction.trim()) {
        return Some(Rejection::Format);
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for word in answer.unicode_words() {
        *counts.entry(word.to_lowercase()).or_default() += 1;
    }
    if counts.values().copied().max().unwrap_or(0) * 2 > aw {
        return Some(Rejection::Format);
    }
    None
}

/// Hash functions of a MinHash signature.
const PERMUTATIONS: usize = 128;
/// LSH bands (`PERMUTATIONS / BANDS` rows each): pairs above ~0.6 Jaccard
/// nearly always share a band.
const BANDS: usize = 32;
/// Words per shingle.
const SHINGLE: usize = 3;

/// MinHash near-duplicate detection over word shingles.
#[derive(Debug, Clone)]
pub struct MinHasher {
    seeds: Vec<u64>,
}

impl Default for MinHasher {
    fn default() -> Self {
        let mut state = 0x6d69_6e68_6173_68u64;
        let seeds = (0..PERMUTATIONS)
            .map(|_| {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                state
            })
            .collect();
        Self { seeds }
    }
}

impl MinHasher {
    /// The set of `SHINGLE`-word shingles of `text` (lower-cased), as hashes.
    pub fn shingles(text: &str) -> HashSet<u64> {
        let words: Vec<String> = text.unicode_words().map(str::to_lowercase).collect();
        if words.len() < SHINGLE {
            return std::iter::once(Hash128::of(words.join(" ").as_bytes()).low64()).collect();
        }
        words.windows(SHINGLE).map(|w| Hash128::of(w.join(" ").as_bytes()).low64()).collect()
    }

    /// The signature: per hash function, the least hash of any shingle.
    pub fn signature(&self, shingles: &HashSet<u64>) -> Vec<u64> {
        self.seeds
            .iter()
            .map(|seed| shingles.iter().map(|s| crate::drift::mix64(s ^ seed)).min().unwrap_or(u64::MAX))
            .collect()
    }

    /// Indices of `texts` to keep: the first of every group of texts whose
    /// shingle sets have Jaccard similarity ≥ `threshold` (candidates from
    /// LSH bands, then checked exactly). Order is preserved.
    pub fn dedupe(&self, texts: &[&str], threshold: f64) -> Vec<usize> {
        let pairs: Vec<(&str, &str)> = texts.iter().map(|t| (*t, "")).collect();
        self.dedupe_pairs(&pairs, threshold)
    }

    /// [`dedupe`](Self::dedupe) for (instruction, answer) samples: two are
    /// duplicates when both their instructions and their answers are
    /// similar (several questions about one extract are different samples;
    /// the same question and extract under two documents are not).
    pub fn dedupe_pairs(&self, samples: &[(&str, &str)], threshold: f64) -> Vec<usize> {
        let shingles: Vec<(HashSet<u64>, HashSet<u64>)> =
            samples.iter().map(|(i, a)| (Self::shingles(i), Self::shingles(a))).collect();
        let rows = PERMUTATIONS / BANDS;
        let mut buckets: HashMap<(usize, Vec<u64>), Vec<usize>> = HashMap::new();
        let mut keep = Vec::new();
        for (i, (instruction, answer)) in shingles.iter().enumerate() {
            let signature = self.signature(&instruction.union(answer).copied().collect());
            let bands: Vec<(usize, Vec<u64>)> =
                signature.chunks(rows).enumerate().map(|(b, band)| (b, band.to_vec())).collect();
            let duplicate = bands.iter().any(|band| {
                buckets.get(band).is_some_and(|others| {
                    others.iter().any(|j| {
                        jaccard(instruction, &shingles[*j].0) >= threshold
                            && jaccard(answer, &shingles[*j].1) >= threshold
                    })
                })
            });
            if duplicate {
                continue;
            }
            for band in bands {
                buckets.entry(band).or_default().push(i);
            }
            keep.push(i);
        }
        keep
    }
}

/// Jaccard similarity of two sets.
pub fn jaccard(a: &HashSet<u64>, b: &HashSet<u64>) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let inter = a.intersection(b).count();
    inter as f64 / (a.len() + b.len() - inter) as f64
}

/// One line of the chat JSONL fine-tuning tools read (OpenAI, TRL, Axolotl):
/// `{"messages": [{"role": "user", …}, {"role": "assistant", …}]}`.
pub fn chat_line(instruction: &str, answer: &str) -> String {
    serde_json::json!({
        "messages": [
            { "role": "user", "content": instruction },
            { "role": "assistant", "content": answer },
        ]
    })
    .to_string()
}

/// One line of a preference dataset (TRL's DPO format):
/// `{"prompt": …, "chosen": …, "rejected": …}`.
pub fn preference_line(prompt: &str, chosen: &str, rejected: &str) -> String {
    serde_json::json!({ "prompt": prompt, "chosen": chosen, "rejected": rejected }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_are_parsed_from_loose_replies() {
        let reply = "Sure! Here are some questions:\n\n1. What did the treaty with Spain settle?\n2) Why was the river \
                     important to trade? It carried goods.\n- Who?\n* What did the treaty with Spain settle?\n\
                     Question 4: How did the ports grow after the treaty?\nThe end.";
        assert_eq!(
            parse_questions(reply),
            vec![
                "What did the treaty with Spain settle?",
                "Why was the river important to trade?",
                "How did the ports grow after the treaty?"
            ]
        );
        assert!(parse_questions("no questions here").is_empty());
    }

    #[test]
    fn quality_rejects_short_long_foreign_and_degenerate_samples() {
        let answer = "The treaty settled the southern boundary and opened the Mississippi to American trade.";
        assert_eq!(quality("What did the treaty settle?", answer), None);
        assert_eq!(quality("Why?", answer), Some(Rejection::TooShort));
        assert_eq!(quality("What did it settle?", "It settled it."), Some(Rejection::TooShort));
        assert_eq!(quality("What did it settle?", &"word ".repeat(900)), Some(Rejection::TooLong));
        assert_eq!(
            quality(
                "Что решил договор?",
                "Договор установил южную границу и открыл Миссисипи для американской торговли."
            ),
            Some(Rejection::Charset)
        );
        assert_eq!(quality("What did it settle?", &"trade ".repeat(12)), Some(Rejection::Format));
    }

    #[test]
    fn near_duplicates_are_removed_and_distinct_texts_kept() {
        let base = "the congress of the united states has passed an act to regulate commerce with the indian tribes and to preserve peace on the frontiers of the union";
        let near = "the congress of the united states has passed an act to regulate commerce with the indian tribes and to preserve the peace on the frontiers of the union";
        let other = "a report on the public debt and the revenue of the treasury shows a surplus for the coming year beyond all expectations of the department";
        let keep = MinHasher::default().dedupe(&[base, other, near, base], 0.7);
        assert_eq!(keep, vec![0, 1]);
        let (a, b) = (MinHasher::shingles(base), MinHasher::shingles(near));
        assert!(jaccard(&a, &b) > 0.7 && jaccard(&a, &MinHasher::shingles(other)) < 0.1);
    }

    #[test]
    fn samples_are_duplicates_only_when_question_and_answer_both_are() {
        let answer = "the congress of the united states has passed an act to regulate commerce with the indian tribes and to preserve peace on the frontiers";
        let other = "a report on the public debt and the revenue of the treasury shows a surplus for the coming year beyond all expectations";
        let samples = [
            ("What act did the congress of the united states pass?", answer),
            ("Why did congress want to preserve peace on the frontiers?", answer),
            ("What act did the congress of the united states pass?", answer),
            ("What act did the congress of the united states pass?", other),
        ];
        assert_eq!(MinHasher::default().dedupe_pairs(&samples, 0.7), vec![0, 1, 3]);
    }

    #[test]
    fn chat_and_preference_lines_are_json() {
        let line: serde_json::Value = serde_json::from_str(&chat_line("Q \"x\"", "A")).expect("json");
        assert_eq!(line["messages"][1]["role"], "assistant");
        let line: serde_json::Value = serde_json::from_str(&preference_line("p", "c", "r")).expect("json");
        assert_eq!(line["rejected"], "r");
    }
}
