//! Generation stopped at a number of sentences: a small generator keeps
//! writing past the three its instructions ask for, and each sentence more
//! costs decoding time and is seldom supported.

use std::ops::ControlFlow;

use twinflow_models::{ChatMessage, Error as ModelError, GenerateParams, Generator};
use unicode_segmentation::UnicodeSegmentation;

use super::grounding::says_something;

/// `generator`'s answer to `messages`, stopped before sentence
/// `max_sentences + 1` begins (0: no limit); of the piece that begins it,
/// only what comes before is passed to `on_text` and kept.
pub(super) fn generate_sentences(
    generator: &dyn Generator,
    messages: &[ChatMessage],
    params: &GenerateParams,
    max_sentences: usize,
    on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
) -> Result<twinflow_models::Generation, ModelError> {
    let mut so_far = String::new();
    let mut limited = |piece: &str| {
        let before = so_far.len();
        so_far.push_str(piece);
        if max_sentences > 0
            && let Some(&cut) = sentence_starts(&so_far).get(max_sentences)
        {
            // What of the piece ends the last sentence still goes out.
            if cut > before {
                let _ = on_text(&so_far[before..cut]);
            }
            return ControlFlow::Break(());
        }
        on_text(piece)
    };
    let mut generation = generator.generate(messages, params, &mut limited)?;
    if max_sentences > 0
        && let Some(&cut) = sentence_starts(&generation.text).get(max_sentences)
    {
        generation.text.truncate(cut);
        generation.text.truncate(generation.text.trim_end().len());
    }
    Ok(generation)
}

/// Byte offsets where the sentences of `text` begin: UAX #29 sentence
/// bounds (line breaks included) whose piece has a word of two letters; a
/// piece of markers alone (`[1] `) belongs to the sentence before it.
fn sentence_starts(text: &str) -> Vec<usize> {
    text.split_sentence_bound_indices()
        .filter(|(_, piece)| says_something(piece))
        .map(|(at, piece)| at + (piece.len() - piece.trim_start().len()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::rag::tests::Words;

    #[test]
    fn generation_stops_before_the_sentence_past_the_limit() {
        let text = "Boats float [1]. They carry goods [2].\nRivers flow. Seas are deep.";
        let generate = |max: usize| {
            let mut streamed = String::new();
            let generation = generate_sentences(&Words(text), &[], &GenerateParams::default(), max, &mut |p| {
                streamed.push_str(p);
                ControlFlow::Continue(())
            })
            .unwrap();
            (generation.text, streamed, generation.finish_reason)
        };
        let (answer, streamed, finish) = generate(2);
        assert_eq!(answer, "Boats float [1]. They carry goods [2].");
        assert_eq!(streamed.trim_end(), answer, "what began the third was not streamed");
        assert_eq!(finish, twinflow_models::FinishReason::Stop);
        assert_eq!(generate(3).0, "Boats float [1]. They carry goods [2].\nRivers flow.");
        assert_eq!(generate(0).0, text, "no limit");
        assert_eq!(generate(9).0, text);
        assert_eq!(sentence_starts("[1] Lone marker. Next one"), [0, 17]);
        assert_eq!(sentence_starts("Done [2]. [3] "), [0], "markers alone belong to the sentence before");
    }
}
