use super::*;

const PARAGRAPH: &str = "Streaming Feature Pipelines\n\nA feature pipeline turns raw documents into \
    features. In a streaming pipeline the features stay fresh because every change to a \
    document flows through the pipeline within seconds. The embeddings of unchanged chunks \
    are cached, so the pipeline only embeds what changed. Fresh features make the twin's \
    answers fresh as well.";

fn row(text: &str) -> ChunkRow {
    ChunkRow {
        chunk_id: Hash128::of(text.as_bytes()),
        doc_id: "doc".into(),
        ordinal: 0,
        text: text.into(),
        char_start: 0,
        char_end: text.chars().count() as u32,
        token_estimate: 0,
        pages: None,
    }
}

fn source(kind: DocumentKind) -> InstructSource<'static> {
    InstructSource { doc_id: "https://example.com/a", title: "On Pipelines", author: "Ada Lovelace", kind }
}

#[test]
fn key_phrases_are_the_frequent_content_words() {
    assert_eq!(key_phrases(PARAGRAPH, 3), ["pipeline", "features", "fresh"]);
    // Ties break alphabetically; stopwords, short words, numbers and
    // contractions never count; possessives count as the word.
    assert_eq!(key_phrases("Zebra apple zebra's apple. It's the 2024 ox, don't.", 5), ["apple", "zebra"]);
    assert!(key_phrases("", 3).is_empty());
}

#[test]
fn content_words_are_distinct_lowercased_and_singular() {
    assert_eq!(
        content_words("The packages' files: Debian's package lists 11 files in v2, as it is."),
        ["package", "file", "debian", "list", "11", "v2"]
    );
    // Stopwords and short words go; "ss" and short stems keep their s.
    assert_eq!(content_words("It was the glass of gas and bus fares"), ["glass", "gas", "bus", "fare"]);
    assert!(content_words("what is it?").is_empty());
}

#[test]
fn heading_is_a_short_unpunctuated_first_line() {
    assert_eq!(heading(PARAGRAPH), Some("Streaming Feature Pipelines"));
    assert_eq!(heading("A full sentence.\nMore text."), None);
    assert_eq!(heading("Only one line"), None);
    assert_eq!(heading("list item\nnext item\n\nMore text."), None);
}

#[test]
fn writes_an_instruction_whose_answer_is_the_chunk() {
    let chunk = row(PARAGRAPH);
    let sample = offline_instructions(&source(DocumentKind::Article), &chunk).unwrap();
    assert_eq!(
        sample.instruction,
        "Write a passage of about 50 words for \"On Pipelines\" by Ada Lovelace under the \
         heading \"Streaming Feature Pipelines\" about pipeline, features and fresh."
    );
    assert_eq!(sample.output, PARAGRAPH);
    assert_eq!(sample.chunk_ids, vec![chunk.chunk_id]);
    assert_eq!(sample.generator, GENERATOR);
    assert_eq!(sample.doc_id, "https://example.com/a");
    let parts: [&[u8]; 3] = [sample.instruction.as_bytes(), PARAGRAPH.as_bytes(), b"https://example.com/a"];
    assert_eq!(sample.sample_id, Hash128::of_parts(&parts));
    assert_eq!(offline_instructions(&source(DocumentKind::Article), &chunk), Some(sample));

    let anonymous = InstructSource { title: "", author: " ", kind: DocumentKind::Post, ..source(DocumentKind::Post) };
    let body = PARAGRAPH.split_once("\n\n").unwrap().1;
    let sample = offline_instructions(&anonymous, &row(body)).unwrap();
    assert_eq!(sample.instruction, "Write a post of about 50 words about pipeline, features and fresh.");
}

#[test]
fn filters_short_chunks_and_code() {
    let short = "Too short to teach anything useful.";
    assert_eq!(offline_instructions(&source(DocumentKind::Article), &row(short)), None);
    let few_words = "Supercalifragilistic ".repeat(15);
    assert!(few_words.len() >= MIN_CHARS);
    assert_eq!(offline_instructions(&source(DocumentKind::Article), &row(&few_words)), None);
    assert_eq!(offline_instructions(&source(DocumentKind::Repository), &row(PARAGRAPH)), None);
}

#[test]
fn split_is_stable_and_about_one_in_ten() {
    assert_eq!(split_for("https://example.com/a"), split_for("https://example.com/a"));
    let test = (0..10_000).filter(|i| split_for(&format!("doc-{i}")) == Split::Test).count();
    assert!((900..=1100).contains(&test), "{test} of 10000 in test");
    let expected = |id: &str| Hash128::of(id.as_bytes()).low64() % 10 == 0;
    assert!((0..100).all(|i| (split_for(&i.to_string()) == Split::Test) == expected(&i.to_string())));
}
