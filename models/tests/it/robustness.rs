//! Awkward inputs through the real encoder: no panic, finite unit vectors.

use crate::{assert_unit, cosine, max_abs_diff, minilm};

#[test]
fn awkward_inputs_give_finite_unit_vectors() {
    let encoder = minilm();
    let long = "The State of the Union is strong; ".repeat(300); // 10,200 chars
    assert!(long.len() >= 10_000);
    let one_word = "a".repeat(500); // one word over max_input_chars_per_word: [UNK]
    let texts = [
        "",
        "   \n\t  ",
        "😀🚀🔥👍🏽",
        "Café crème brûlée à Zürich, naïve résumé, ñandú, Ελληνικά, Ångström",
        "中文文本的嵌入测试。日本語のテキストも。한국어 문장입니다.",
        "control\u{0}chars\u{7}and\u{200b}zero-width\u{feff}",
        "e\u{301}te\u{301} combining accents",
        &one_word,
        &long,
    ];
    let vectors = encoder.embed(&texts).unwrap();
    for (text, v) in texts.iter().zip(&vectors) {
        let shown: String = text.chars().take(30).collect();
        assert_unit(v, encoder.dim(), &shown);
    }

    // The empty string is `[CLS] [SEP]`; whitespace-only normalises to the same.
    let tokenizer = encoder.tokenizer();
    assert_eq!(tokenizer.encode("").unwrap(), [101, 102]);
    assert_eq!(tokenizer.encode("   \n\t  ").unwrap(), [101, 102]);
    assert!(max_abs_diff(&vectors[0], &vectors[1]) < 1e-6);

    // Long input: counted in full, cut at 256 tokens, same vector as its first 254 word pieces.
    assert!(encoder.count_tokens(&long).unwrap() > 2_000);
    let ids = tokenizer.encode(&long).unwrap();
    assert_eq!(ids.len(), 256);
    assert_eq!((ids[0], ids[255]), (101, 102));
    let prefix = "The State of the Union is strong; ".repeat(40);
    let prefix_ids = tokenizer.encode(&prefix).unwrap();
    assert_eq!(prefix_ids[..255], ids[..255], "the kept tokens are the first ones");

    // Accented text is close to its unaccented form (the tokenizer strips accents).
    let plain = encoder.embed(&["Cafe creme brulee a Zurich"]).unwrap();
    let accented = encoder.embed(&["Café crème brûlée à Zürich"]).unwrap();
    assert!(cosine(&plain[0], &accented[0]) > 0.999);
}

#[test]
fn concurrent_callers_get_the_same_vectors() {
    let encoder = minilm();
    let texts = ["a first sentence", "and a second, somewhat longer, sentence"];
    let expected = encoder.embed(&texts).unwrap();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4).map(|_| scope.spawn(|| encoder.embed(&texts).unwrap())).collect();
        for handle in handles {
            let got = handle.join().unwrap();
            for (a, b) in got.iter().zip(&expected) {
                assert!(max_abs_diff(a, b) < 1e-6);
            }
        }
    });
}
