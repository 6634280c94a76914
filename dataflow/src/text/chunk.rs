//! Chunk: cleaned text → extracts whose cut points are chosen by content, so
//! an edit changes only the chunks around it.
//!
//! Owns the unit splitter (sentences for prose, lines for code), the cut
//! rule, the packing into chunks with `min_chars`/`max_chars`, chunk ids and
//! the token estimate.
//!
//! ## The cut rule (a local maximum, not a running counter)
//! Every unit gets a score: for prose `(tier, hash)` with tier 2 for the last
//! sentence of a paragraph, 1 for a sentence whose hash is 0 mod
//! `boundary_one_in`, 0 otherwise; for code the tier of the *next* line (2: a
//! top-level line after a blank line, 1: any line after a blank line, 0).
//! A chunk ends after unit `u` when `u` scores strictly higher than every
//! other unit `v` that would leave a chunk shorter than `min_chars` between
//! the cuts after `u` and after `v`. So two cuts are always `min_chars`
//! apart, and whether `u` is a cut depends only on text within `min_chars`
//! of it: an edit moves only cuts near it and never ripples further (a
//! greedy "first boundary after `min_chars`" rule re-synchronises only by
//! luck; see the locality test). A stretch between two cuts longer than
//! `max_chars` is split inside itself at its best-scoring units, with pieces
//! of at least `min_chars` where `max_chars` allows.

use twinflow_schemas::config::ChunkSpec;
use twinflow_schemas::{DocumentKind, Hash128};
use unicode_segmentation::UnicodeSegmentation;

/// One extract of a cleaned text.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Chunk {
    /// Exactly the characters `char_start..char_end` of the chunked text.
    pub text: String,
    /// Start in the chunked text, in Unicode scalar values.
    pub char_start: u32,
    /// End (exclusive) in the chunked text, in Unicode scalar values.
    pub char_end: u32,
    /// [`token_estimate`] of `text`.
    pub token_estimate: u32,
}

/// A chunk's identity: the hash of the passage it is embedded as (see
/// [`passage`]; the chunk's text alone when it has no context).
pub fn chunk_id(passage: &str) -> Hash128 {
    Hash128::of(passage.as_bytes())
}

/// The share of a chunk's token budget its title context may take (one in
/// this many tokens); a longer title is cut at a word boundary.
pub const TITLE_SHARE: usize = 4;

/// The context a document's title gives each of its chunks: the title with
/// whitespace collapsed, cut to words that fit `max_tokens / TITLE_SHARE`
/// tokens by `count`; `None` for a blank title.
pub fn title_context(title: &str, max_tokens: usize, count: &dyn Fn(&str) -> usize) -> Option<String> {
    let budget = (max_tokens / TITLE_SHARE).max(1);
    let mut context = String::new();
    for word in title.split_whitespace() {
        let longer = if context.is_empty() { word.to_owned() } else { format!("{context} {word}") };
        if count(&longer) > budget {
            break;
        }
        context = longer;
    }
    (!context.is_empty()).then_some(context)
}

/// What a chunk's vector is computed from: its title context, a blank line,
/// then its text; the text alone without a context.
pub fn passage(context: Option<&str>, text: &str) -> String {
    match context {
        Some(context) => format!("{context}\n\n{text}"),
        None => text.to_owned(),
    }
}

/// Estimated model tokens: `max(⌈chars / 4⌉, ⌈words · 4 / 3⌉)`, 0 for empty
/// text, with words as Unicode word segments (so each CJK ideograph is a
/// word). Four characters per token is typical of English BPE; the word
/// term keeps short-word and CJK text from being underestimated.
pub fn token_estimate(text: &str) -> u32 {
    let chars = text.chars().count();
    let words = text.unicode_words().count();
    to_u32(chars.div_ceil(4).max((words * 4).div_ceil(3)))
}

/// Cuts `text` into chunks with the sizes of `spec`: sentence-packed for
/// prose kinds, line-packed for [`DocumentKind::Repository`]. Deterministic;
/// empty or blank text gives no chunks.
pub fn chunk(text: &str, kind: DocumentKind, spec: &ChunkSpec) -> Vec<Chunk> {
    let limits = Limits::of(spec);
    let units = match kind {
        DocumentKind::Repository => code_units(text, &limits),
        _ => prose_units(text, &limits),
    };
    if units.is_empty() {
        return Vec::new();
    }
    let mut chunks = Vec::new();
    let mut first = 0;
    for last in cuts(&units, limits.min) {
        pack(text, &units[first..=last], &limits, &mut chunks);
        first = last + 1;
    }
    chunks
}

/// `spec` made safe: `max ≥ 1`, `min ≤ max`, `one_in ≥ 1`.
#[derive(Debug)]
struct Limits {
    min: usize,
    max: usize,
    one_in: u128,
}

impl Limits {
    fn of(spec: &ChunkSpec) -> Self {
        let max = spec.max_chars.max(1);
        Self { min: spec.min_chars.min(max), max, one_in: u128::from(spec.boundary_one_in.max(1)) }
    }
}

/// A sentence or line: its trimmed extent in bytes and characters, and its
/// score as the last unit of a chunk.
#[derive(Clone, Copy, Debug)]
struct Unit {
    start: usize,
    end: usize,
    cstart: usize,
    cend: usize,
    score: (u8, u64),
}

/// Converts increasing byte offsets into character offsets in one pass.
#[derive(Default)]
struct CharPos {
    byte: usize,
    chars: usize,
}

impl CharPos {
    fn at(&mut self, text: &str, byte: usize) -> usize {
        self.chars += text[self.byte..byte].chars().count();
        self.byte = byte;
        self.chars
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The trimmed part of `text[start..end]`, or `None` when it is blank.
fn trimmed(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let slice = &text[start..end];
    let lead = slice.len() - slice.trim_start().len();
    let body = slice.trim().len();
    (body > 0).then_some((start + lead, start + lead + body))
}

/// Splits the non-blank `text[start..end]` into pieces of at most `max`
/// characters, at the last whitespace that fits (anywhere if none).
fn split_long(text: &str, start: usize, end: usize, max: usize) -> Vec<(usize, usize)> {
    let mut pieces = Vec::new();
    let mut from = start;
    loop {
        let rest = &text[from..end];
        let Some((limit, _)) = rest.char_indices().nth(max) else {
            pieces.push((from, end));
            return pieces;
        };
        let cut =
            rest[..limit].char_indices().rev().find(|&(i, c)| c.is_whitespace() && i > 0).map_or(limit, |(i, _)| i);
        if let Some(piece) = trimmed(text, from, from + cut) {
            pieces.push(piece);
        }
        match trimmed(text, from + cut, end) {
            Some((next, _)) => from = next,
            None => return pieces,
        }
    }
}

/// Prose units: sentences (Unicode sentence boundaries) within paragraphs;
/// a blank line always ends a paragraph and so a sentence.
fn prose_units(text: &str, limits: &Limits) -> Vec<Unit> {
    let mut units = Vec::new();
    let mut pos = CharPos::default();
    for (para_start, para_end) in paragraphs(text) {
        let para = &text[para_start..para_end];
        let sentences: Vec<(usize, usize)> = para
            .split_sentence_bound_indices()
            .filter_map(|(at, s)| trimmed(text, para_start + at, para_start + at + s.len()))
            .collect();
        let count = sentences.len();
        for (i, &(start, end)) in sentences.iter().enumerate() {
            let pieces = split_long(text, start, end, limits.max);
            let last_piece = pieces.len().saturating_sub(1);
            for (k, (start, end)) in pieces.into_iter().enumerate() {
                let hash = Hash128::of(text[start..end].as_bytes());
                let tier = if i + 1 == count && k == last_piece { 2 } else { u8::from(hash.0 % limits.one_in == 0) };
                let (cstart, cend) = (pos.at(text, start), pos.at(text, end));
                units.push(Unit { start, end, cstart, cend, score: (tier, (hash.0 >> 64) as u64) });
            }
        }
    }
    units
}

/// Byte ranges of the paragraphs of `text`: maximal runs of non-blank lines.
fn paragraphs(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let (start, end) = (at, at + line.len());
        at = end;
        if line.trim().is_empty() {
            out.extend(current.take());
        } else {
            current = Some((current.map_or(start, |(s, _)| s), end));
        }
    }
    out.extend(current);
    out
}

/// Code units: non-blank lines (indentation kept, trailing spaces not), each
/// scored by the line that follows it.
fn code_units(text: &str, limits: &Limits) -> Vec<Unit> {
    // (start, end, starts a top-level item after a blank line, after a blank line)
    let mut lines: Vec<(usize, usize, bool, bool)> = Vec::new();
    let mut after_blank = false;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let start = at;
        at += line.len();
        let body = line.trim_end();
        if body.trim_start().is_empty() {
            after_blank = true;
            continue;
        }
        let top_level = !body.starts_with(char::is_whitespace);
        let line_end = start + body.len();
        for (k, (s, e)) in split_long(text, start, line_end, limits.max).into_iter().enumerate() {
            // Keep the indentation of a line's first piece when it fits.
            let keep = k == 0 && text[start..e].chars().count() <= limits.max;
            let s = if keep { start } else { s };
            lines.push((s, e, k == 0 && after_blank && top_level, k == 0 && after_blank));
        }
        after_blank = false;
    }
    let mut pos = CharPos::default();
    let mut units = Vec::with_capacity(lines.len());
    for (i, &(start, end, _, _)) in lines.iter().enumerate() {
        let score = match lines.get(i + 1) {
            Some(&(s, e, top, blank)) => {
                let hash = Hash128::of(text[s..e].trim().as_bytes());
                let tier = if top { 2 } else { u8::from(blank) };
                (tier, (hash.0 >> 64) as u64)
            }
            None => (0, 0),
        };
        let (cstart, cend) = (pos.at(text, start), pos.at(text, end));
        units.push(Unit { start, end, cstart, cend, score });
    }
    units
}

/// Indices of the units after which a chunk ends (the last unit always).
///
/// Unit `i` is eligible when the chunks before and after it could both
/// reach `min` characters; it is a cut when it outscores every other eligible
/// unit `j` for which the chunk between the cuts after `i` and `j` would be
/// shorter than `min`. Both windows only move forward, so two monotonic
/// queues find their maxima in linear time.
fn cuts(units: &[Unit], min: usize) -> Vec<usize> {
    let n = units.len();
    let (first, last) = (units[0].cstart, units[n - 1].cend);
    let eligible = |j: usize| j + 1 < n && units[j].cend - first >= min && last - units[j + 1].cstart >= min;
    let mut out = Vec::new();
    let mut behind = std::collections::VecDeque::<usize>::new();
    let mut ahead = std::collections::VecDeque::<usize>::new();
    let mut next_ahead = 1;
    let push = |queue: &mut std::collections::VecDeque<usize>, j: usize| {
        while queue.back().is_some_and(|&k| units[k].score < units[j].score) {
            queue.pop_back();
        }
        queue.push_back(j);
    };
    for i in 0..n.saturating_sub(1) {
        // Behind: eligible j < i with units[i].cend - units[j + 1].cstart < min.
        if i > 0 && eligible(i - 1) {
            push(&mut behind, i - 1);
        }
        while behind.front().is_some_and(|&j| units[i].cend - units[j + 1].cstart >= min) {
            behind.pop_front();
        }
        // Ahead: eligible j > i with units[j].cend - units[i + 1].cstart < min.
        next_ahead = next_ahead.max(i + 1);
        while next_ahead < n && units[next_ahead].cend - units[i + 1].cstart < min {
            if eligible(next_ahead) {
                push(&mut ahead, next_ahead);
            }
            next_ahead += 1;
        }
        while ahead.front().is_some_and(|&j| j <= i) {
            ahead.pop_front();
        }
        let beats =
            |queue: &std::collections::VecDeque<usize>| queue.front().is_none_or(|&j| units[j].score < units[i].score);
        if eligible(i) && beats(&behind) && beats(&ahead) {
            out.push(i);
        }
    }
    out.push(n - 1);
    out
}

/// Emits the units of one stretch between cuts as chunks of at most `max`
/// characters, splitting at the best-scoring units.
fn pack(text: &str, units: &[Unit], limits: &Limits, out: &mut Vec<Chunk>) {
    let len = |a: usize, b: usize| units[b].cend - units[a].cstart;
    let last = units.len() - 1;
    let mut from = 0;
    while len(from, last) > limits.max {
        let fits = |j: &usize| len(from, *j) <= limits.max;
        let long = |j: &usize| len(from, *j) >= limits.min;
        let leaves = |j: &usize| len(*j + 1, last) >= limits.min;
        let best = |it: &mut dyn Iterator<Item = usize>| {
            it.fold(None, |best: Option<usize>, j| match best {
                Some(b) if units[b].score >= units[j].score => Some(b),
                _ => Some(j),
            })
        };
        let range = || (from..last).take_while(|j| fits(j));
        let cut = best(&mut range().filter(|j| long(j) && leaves(j)))
            .or_else(|| best(&mut range().filter(|j| long(j))))
            .or_else(|| range().last())
            .unwrap_or(from);
        emit(text, &units[from..=cut], out);
        from = cut + 1;
    }
    emit(text, &units[from..], out);
}

fn emit(text: &str, units: &[Unit], out: &mut Vec<Chunk>) {
    let (Some(first), Some(last)) = (units.first(), units.last()) else {
        return;
    };
    let body = &text[first.start..last.end];
    out.push(Chunk {
        text: body.to_owned(),
        char_start: to_u32(first.cstart),
        char_end: to_u32(last.cend),
        token_estimate: token_estimate(body),
    });
}

#[cfg(test)]
mod tests;

/// Splits every chunk that `count` says is longer than `max_tokens` into
/// pieces that fit, and sets each chunk's `token_estimate` to its `count`.
///
/// A chunk that is too long is cut in two at its best boundary near the
/// middle (a blank line, else a line end, else a sentence end, else any
/// whitespace, else the middle character), and each half again until it
/// fits, so the pieces depend only on the chunk's own text: an edit elsewhere
/// in the document leaves them alone. Pieces are trimmed substrings with
/// their character offsets; a piece that cannot be split further (a single
/// character) is kept even if still too long, and the model truncates it.
pub fn fit_tokens(chunks: Vec<Chunk>, max_tokens: usize, count: &dyn Fn(&str) -> usize) -> Vec<Chunk> {
    let mut out = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        fit_one(chunk, max_tokens.max(1), count, &mut out);
    }
    out
}

fn fit_one(mut chunk: Chunk, max_tokens: usize, count: &dyn Fn(&str) -> usize, out: &mut Vec<Chunk>) {
    let tokens = count(&chunk.text);
    let Some(at) = (tokens > max_tokens).then(|| split_point(&chunk.text)).flatten() else {
        chunk.token_estimate = to_u32(tokens);
        out.push(chunk);
        return;
    };
    let mut pos = CharPos::default();
    for (start, end) in [trimmed(&chunk.text, 0, at), trimmed(&chunk.text, at, chunk.text.len())].into_iter().flatten()
    {
        let cstart = chunk.char_start as usize + pos.at(&chunk.text, start);
        let cend = chunk.char_start as usize + pos.at(&chunk.text, end);
        let piece = Chunk {
            text: chunk.text[start..end].to_owned(),
            char_start: to_u32(cstart),
            char_end: to_u32(cend),
            token_estimate: 0,
        };
        fit_one(piece, max_tokens, count, out);
    }
}

/// The byte offset where a too-long text is best cut in two, or `None` when
/// it cannot be (fewer than two characters). Boundaries are searched in the
/// middle half of the text first, then anywhere; the strongest kind wins and,
/// among equals, the one nearest the middle.
fn split_point(text: &str) -> Option<usize> {
    if text.chars().nth(1).is_none() {
        return None;
    }
    let len = text.len();
    let middle = len / 2;
    let strength = |at: usize| -> u8 {
        let (before, after) = (&text[..at], &text[at..]);
        if before.ends_with("\n\n") || after.starts_with("\n\n") {
            4
        } else if before.ends_with('\n') {
            3
        } else if after.starts_with(char::is_whitespace)
            && before.trim_end().ends_with(['.', '!', '?', ';', ':', '。', '！', '？'])
        {
            2
        } else if after.starts_with(char::is_whitespace) {
            1
        } else {
            0
        }
    };
    for (lo, hi) in [(len / 4, len - len / 4), (1, len)] {
        let best = text
            .char_indices()
            .map(|(i, _)| i)
            .filter(|&i| i >= lo.max(1) && i < hi)
            .map(|i| (strength(i), std::cmp::Reverse(i.abs_diff(middle)), i))
            .filter(|&(s, _, _)| s > 0)
            .max();
        if let Some((_, _, at)) = best {
            return Some(at);
        }
    }
    // No whitespace at all: the character boundary nearest the middle.
    (1..len)
        .map(|d| [middle.saturating_sub(d), middle + d])
        .flatten()
        .chain([middle])
        .find(|&i| i > 0 && i < len && text.is_char_boundary(i))
}
