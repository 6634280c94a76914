//! SmolLM2-135M-Instruct from its GGUF: tokenizer, chat template, logits and
//! greedy answers against the reference fixture.

use std::ops::ControlFlow;
use std::sync::OnceLock;

use serde::Deserialize;
use twinflow_models::{
    ChatMessage, FinishReason, GenerateParams, Generator, LocalLlm, cpu_device, default_cache_dir, fetch_smollm2,
};

#[derive(Deserialize)]
struct Reference {
    prompt: String,
    prompt_ids: Vec<u32>,
    greedy_ids: Vec<u32>,
    first_step_top5: Vec<(u32, f32)>,
    tokenizer_cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

fn reference() -> Reference {
    serde_json::from_str(include_str!("../data/smollm2_reference.json")).unwrap()
}

/// The model, loaded once for the binary (context cut to 2,048 positions).
fn llm() -> &'static LocalLlm {
    static LLM: OnceLock<LocalLlm> = OnceLock::new();
    LLM.get_or_init(|| {
        let path = fetch_smollm2(&default_cache_dir()).unwrap_or_else(|e| panic!("{e}"));
        LocalLlm::load(&path, 2048, &cpu_device()).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// The same model through the burn graph (the reference path).
fn llm_burn_graph() -> &'static LocalLlm {
    static LLM: OnceLock<LocalLlm> = OnceLock::new();
    LLM.get_or_init(|| {
        let path = fetch_smollm2(&default_cache_dir()).unwrap_or_else(|e| panic!("{e}"));
        LocalLlm::load_burn_graph(&path, 2048, &cpu_device()).unwrap_or_else(|e| panic!("{e}"))
    })
}

fn question() -> Vec<ChatMessage> {
    vec![ChatMessage::new("user", "What is the capital of France?")]
}

#[test]
fn tokenizer_matches_the_reference_and_round_trips() {
    let reference = reference();
    let tokenizer = llm().tokenizer();
    for case in &reference.tokenizer_cases {
        let ids = tokenizer.encode(&case.text).unwrap();
        assert_eq!(ids, case.ids, "{:?}", case.text);
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), case.text);
    }
    assert_eq!(tokenizer.encode(&reference.prompt).unwrap(), reference.prompt_ids);
}

#[test]
fn chat_template_from_the_metadata_renders_the_reference_prompt() {
    let prompt = llm().tokenizer().apply_chat_template(&question()).unwrap();
    assert_eq!(prompt, reference().prompt);
    // A system message replaces the default one.
    let with_system = [ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "Hi")];
    let prompt = llm().tokenizer().apply_chat_template(&with_system).unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn first_step_logits_match_the_reference_and_are_stable() {
    let reference = reference();
    assert_eq!(llm().model().path(), "fused-cpu");
    assert_eq!(llm_burn_graph().model().path(), "burn-graph");
    let fused = llm().prompt_logits(&reference.prompt).unwrap();
    let graph = llm_burn_graph().prompt_logits(&reference.prompt).unwrap();
    for logits in [&fused, &graph] {
        assert_eq!(logits.len(), 49152);
        for (id, expected) in &reference.first_step_top5 {
            let got = logits[*id as usize];
            assert!((got - expected).abs() < 2e-2, "logit of {id}: {got} vs {expected}");
        }
    }
    let worst = fused.iter().zip(&graph).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-2, "fused and burn-graph logits differ by {worst}");
    assert_eq!(fused, llm().prompt_logits(&reference.prompt).unwrap(), "same prompt, same logits");
    assert_eq!(graph, llm_burn_graph().prompt_logits(&reference.prompt).unwrap());
}

#[test]
fn the_burn_graph_answers_as_the_fused_path_does() {
    let params = GenerateParams { max_tokens: 16, ..GenerateParams::default() };
    let fused = llm().generate(&question(), &params, &mut |_| ControlFlow::Continue(())).unwrap();
    let graph = llm_burn_graph().generate(&question(), &params, &mut |_| ControlFlow::Continue(())).unwrap();
    assert_eq!(fused.text, graph.text);
}

/// A step called from a rayon worker runs on that thread alone (a broadcast
/// from inside the pool could wait on a worker blocked behind another step),
/// and answers as a step from outside does.
#[test]
fn decoding_inside_the_rayon_pool_answers_as_outside() {
    let params = GenerateParams { max_tokens: 8, ..GenerateParams::default() };
    let outside = llm().generate(&question(), &params, &mut |_| ControlFlow::Continue(())).unwrap();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let inside = pool.install(|| llm().generate(&question(), &params, &mut |_| ControlFlow::Continue(())).unwrap());
    assert_eq!(outside.text, inside.text);
}

#[test]
fn the_gguf_blocks_kept_in_memory_answer_as_the_f32_weights_do() {
    let path = fetch_smollm2(&default_cache_dir()).unwrap_or_else(|e| panic!("{e}"));
    let blocks = LocalLlm::load_quantized(&path, 2048, &cpu_device()).unwrap();
    let (f32_bytes, block_bytes) =
        (llm().model().projection_bytes().unwrap(), blocks.model().projection_bytes().unwrap());
    assert!(block_bytes * 4 < f32_bytes, "Q4_1 projections: {block_bytes} bytes as blocks, {f32_bytes} as f32");
    let params = GenerateParams { max_tokens: 16, ..GenerateParams::default() };
    let a = llm().generate(&question(), &params, &mut |_| ControlFlow::Continue(())).unwrap();
    let b = blocks.generate(&question(), &params, &mut |_| ControlFlow::Continue(())).unwrap();
    let prompt = llm().tokenizer().apply_chat_template(&question()).unwrap();
    let (la, lb) = (llm().prompt_logits(&prompt).unwrap(), blocks.prompt_logits(&prompt).unwrap());
    assert_eq!(a.text, b.text);
    // The logits multiply 8-bit activations in two passes (the second quantises the first's error);
    // both paths keep keys and values in half precision (2⁻¹¹ relative, as llama.cpp's default
    // cache), where one side of a rounding boundary and the other differ by a step.
    let (diff, scale) = (crate::max_abs_diff(&la, &lb), la.iter().fold(0f32, |m, v| m.max(v.abs())));
    assert!(diff < 4e-4 * scale, "logits differ by {diff} (up to {scale})");
}

#[test]
fn greedy_answer_names_paris_and_streams_the_same_text() {
    let mut pieces = Vec::new();
    let generation = llm()
        .generate(&question(), &GenerateParams { max_tokens: 40, ..GenerateParams::default() }, &mut |piece| {
            pieces.push(piece.to_owned());
            ControlFlow::Continue(())
        })
        .unwrap();
    assert!(generation.text.contains("Paris"), "{:?}", generation.text);
    assert_eq!(generation.finish_reason, FinishReason::Stop);
    assert_eq!(pieces.concat(), generation.text);
    assert_eq!(generation.prompt_tokens, reference().prompt_ids.len());
    // The reference's ids end with <|im_end|>, which is not counted as output.
    assert_eq!(generation.completion_tokens, reference().greedy_ids.len() - 1);
}

#[test]
fn stop_strings_max_tokens_and_sampling() {
    let params = GenerateParams { max_tokens: 40, stop: vec![" is".into()], ..GenerateParams::default() };
    let cut = llm().generate(&question(), &params, &mut |_| ControlFlow::Continue(())).unwrap();
    assert_eq!(cut.text, "The capital of France");
    assert_eq!(cut.finish_reason, FinishReason::Stop);

    let params = GenerateParams { max_tokens: 3, ..GenerateParams::default() };
    let short = llm().generate(&question(), &params, &mut |_| ControlFlow::Continue(())).unwrap();
    assert_eq!((short.completion_tokens, short.finish_reason), (3, FinishReason::Length));

    let sampled =
        GenerateParams { max_tokens: 12, temperature: 0.8, top_p: 0.95, seed: 11, ..GenerateParams::default() };
    let a = llm().generate(&question(), &sampled, &mut |_| ControlFlow::Continue(())).unwrap();
    let b = llm().generate(&question(), &sampled, &mut |_| ControlFlow::Continue(())).unwrap();
    assert_eq!(a.text, b.text, "same seed, same text");
}

#[test]
fn a_prompt_past_the_context_is_an_error() {
    let long = "word ".repeat(3000);
    let err = llm()
        .generate(&[ChatMessage::new("user", long)], &GenerateParams::default(), &mut |_| ControlFlow::Continue(()));
    assert!(matches!(err, Err(twinflow_models::Error::ContextOverflow { .. })), "{err:?}");
}

#[test]
fn a_prompt_sharing_a_prefix_reuses_the_cache_and_answers_the_same() {
    let path = fetch_smollm2(&default_cache_dir()).unwrap_or_else(|e| panic!("{e}"));
    let load = || LocalLlm::load(&path, 2048, &cpu_device()).unwrap();
    let (llm, fresh) = (load(), load());
    let params = GenerateParams { max_tokens: 12, ..GenerateParams::default() };
    let ask = |llm: &LocalLlm, text: &str| {
        llm.generate(&[ChatMessage::new("user", text)], &params, &mut |_| ControlFlow::Continue(())).unwrap()
    };
    let first = ask(&llm, "What is the capital of France?");
    assert_eq!(first.cached_tokens, 0, "nothing to reuse yet");
    // The chat template's system text and "What is the capital of" are shared.
    let second = ask(&llm, "What is the capital of Italy?");
    let alone = ask(&fresh, "What is the capital of Italy?");
    assert!(second.cached_tokens > 20 && second.cached_tokens < second.prompt_tokens, "{second:?}");
    assert_eq!((second.text.as_str(), alone.cached_tokens), (alone.text.as_str(), 0));
    // The same prompt again: all but its last token come from the cache.
    let again = ask(&llm, "What is the capital of Italy?");
    assert_eq!((again.cached_tokens, again.text.as_str()), (again.prompt_tokens - 1, alone.text.as_str()));
}
