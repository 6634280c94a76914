//! Throughput of the real encoder on the CPU backend: 200 texts of ~100 words,
//! batch 32. A figure to read, not an assertion (benches/ owns speed).
//! `cargo test -p twinflow-models --test it speed -- --ignored --nocapture`

use std::time::Instant;

use crate::minilm;

const WORDS: &str = "the of and to in is that for it as was with be by on not he this are or \
    his from at which but have an they you were her she there been one all we their has would \
    when if so no will can more out up what about into than them only other new some could time \
    these two may then do first any now such like our over man me even most made after also did \
    many before must through years where much your way well down should because each just those \
    people how too little state good very make world still own see men work long get here between \
    both life being under never day same another know while last might us great old year off come \
    since against go came right used take three government country union congress nation war peace \
    law economy trade energy health children education security freedom citizens future";

fn texts(n: usize, words: usize) -> Vec<String> {
    let vocab: Vec<&str> = WORDS.split_whitespace().collect();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            let mut text: Vec<&str> = Vec::with_capacity(words);
            for _ in 0..words {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                text.push(vocab[(state % vocab.len() as u64) as usize]);
            }
            text.join(" ") + "."
        })
        .collect()
}

#[test]
#[ignore = "prints a throughput figure; run with --ignored --nocapture"]
fn speed() {
    let encoder = minilm();
    let owned = texts(200, 100);
    let texts: Vec<&str> = owned.iter().map(String::as_str).collect();
    let tokens: usize = texts.iter().map(|t| encoder.count_tokens(t).unwrap()).sum();
    encoder.embed(&texts[..32]).unwrap(); // warm-up
    let start = Instant::now();
    let vectors = encoder.embed(&texts).unwrap();
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(vectors.len(), texts.len());
    println!(
        "speed: {} texts, {:.0} tokens/text, batch {}: {:.2} s, {:.1} sentences/s, {:.0} tokens/s",
        texts.len(),
        tokens as f64 / texts.len() as f64,
        encoder.batch_size(),
        seconds,
        texts.len() as f64 / seconds,
        tokens as f64 / seconds
    );
}
