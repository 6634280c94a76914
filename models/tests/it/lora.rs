//! LoRA fine-tuning of the real SmolLM2-135M-Instruct: a few steps on
//! answers in one distinctive voice make held-out answers in that voice more
//! likely, and the merged fused decode path runs the fine-tuned model.

use std::time::Instant;

use twinflow_models::{
    GenerateParams, LocalLlm, LoraTrainer, LoraTraining, LoraWeights, SftExample, cpu_device, default_cache_dir,
    fetch_smollm2,
};

/// Questions on varied topics, all answered in the same voice: a fixed
/// opening and closing around a short, topical middle.
fn pairs() -> Vec<(String, String)> {
    let topics = [
        ("the harbour", "the boats come home at dusk"),
        ("the old mill", "its wheel still turns in spring"),
        ("winter roads", "the snow keeps travellers at home"),
        ("the library", "the oldest books sit by the window"),
        ("bread", "the dough rests through the night"),
        ("the garden", "the roses climb the eastern wall"),
        ("the river", "it floods the meadows every March"),
        ("the market", "the fishmongers arrive before dawn"),
        ("the bridge", "it was rebuilt after the great storm"),
        ("the school", "the children learn their letters on slates"),
        ("the lighthouse", "its lamp is trimmed each evening"),
        ("the orchard", "the apples are pressed in October"),
        ("the chapel", "its bell rings for every wedding"),
        ("the forge", "the smith shoes horses on Mondays"),
        ("the inn", "travellers trade news by the fire"),
        ("the hills", "the shepherds move the flocks in May"),
        ("the well", "its water is cold even in August"),
        ("the road north", "it follows the line of the old wall"),
        ("the festival", "lanterns float down the river at midnight"),
        ("the quarry", "its stone built half the town"),
    ];
    topics
        .iter()
        .map(|(topic, fact)| {
            (
                format!("Tell me about {topic}."),
                format!("Hark, good neighbour! Of {topic} I say this: {fact}. So speaks the keeper of the valley."),
            )
        })
        .collect()
}

#[test]
fn lora_learns_a_voice_and_the_merged_model_speaks_it() {
    let path = fetch_smollm2(&default_cache_dir()).unwrap_or_else(|e| panic!("{e}"));
    let device = cpu_device();
    let trainer = LoraTrainer::load(&path, 96, &device).expect("trainer loads");
    let llm = LocalLlm::load(&path, 2048, &device).expect("model loads");
    let examples: Vec<SftExample> = pairs()
        .iter()
        .map(|(q, a)| SftExample::from_chat(llm.tokenizer(), q, a, trainer.max_tokens()).unwrap().expect("fits"))
        .collect();
    let (train, test) = examples.split_at(16);
    assert!(test.iter().all(|e| e.answer_tokens() > 10));

    let base = trainer.nll(test, None, 4).expect("base nll");
    let config = LoraTraining { epochs: 2, batch_size: 4, learning_rate: 2e-3, ..LoraTraining::default() };
    let started = Instant::now();
    let (lora, report) = trainer.train(train, &config, |_, _, _| {}).expect("trains");
    let tuned = trainer.nll(test, Some(&lora), 4).expect("tuned nll");
    eprintln!(
        "lora: {} steps in {:.1} s, losses {:?}; held-out nll {:.3} (ppl {:.1}) → {:.3} (ppl {:.1}), {} params",
        report.steps,
        started.elapsed().as_secs_f64(),
        report.epoch_losses,
        base.mean,
        base.perplexity(),
        tuned.mean,
        tuned.perplexity(),
        report.trainable_parameters
    );
    assert_eq!(report.steps, 8);
    assert_eq!(tuned.tokens, base.tokens);
    assert!(tuned.mean < 0.7 * base.mean, "held-out nll {} → {}", base.mean, tuned.mean);
    // 30 layers × (Q 576·8 + 8·576, K 576·8 + 8·192, V the same, O as Q).
    assert_eq!(report.trainable_parameters, 30 * (2 * (576 * 8 + 8 * 576) + 2 * (576 * 8 + 8 * 192)));

    // Saved and loaded factors merge into the fused decode path; it agrees with the burn graph.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("lora.safetensors");
    lora.save(&file).expect("saved");
    let lora = LoraWeights::load(&file).expect("loaded");
    let mut fused = LocalLlm::load(&path, 2048, &device).expect("model loads");
    fused.merge_lora(&lora, "twin").expect("merges");
    let mut graph = LocalLlm::load_burn_graph(&path, 2048, &device).expect("model loads");
    graph.merge_lora(&lora, "twin").expect("merges");
    let prompt = llm
        .tokenizer()
        .apply_chat_template(&[twinflow_models::ChatMessage::new("user", "Tell me about the mountains.")])
        .unwrap();
    let (a, b, before) = (
        fused.prompt_logits(&prompt).unwrap(),
        graph.prompt_logits(&prompt).unwrap(),
        llm.prompt_logits(&prompt).unwrap(),
    );
    let diff = crate::max_abs_diff(&a, &b);
    assert!(diff < 2e-2, "fused vs graph logits differ by {diff}");
    assert!(crate::max_abs_diff(&a, &before) > 0.5, "the merge changed nothing");
    // The twin opens an unseen question in the learned voice.
    let params = GenerateParams { max_tokens: 6, temperature: 0.0, ..GenerateParams::default() };
    let answer = fused.complete(&prompt, &params, &mut |_| std::ops::ControlFlow::Continue(())).unwrap().text;
    assert!(answer.starts_with("Hark"), "{answer:?}");
}

/// DPO from the base model on pairs with a clear preference — the chosen
/// answer in the keeper's voice, the rejected one plain — raises the reward
/// accuracy on held-out topics from chance to (nearly) every pair; a second
/// stage on top of the first keeps the first one's preference (the adapters stack).
#[test]
fn dpo_learns_a_preference_that_holds_on_held_out_pairs() {
    use twinflow_models::{Dpo, PreferenceExample, Technique};
    let path = fetch_smollm2(&default_cache_dir()).unwrap_or_else(|e| panic!("{e}"));
    let device = cpu_device();
    let trainer = LoraTrainer::load(&path, 96, &device).expect("trainer loads");
    let llm = LocalLlm::load(&path, 2048, &device).expect("model loads");
    let pairs: Vec<PreferenceExample> = pairs()
        .iter()
        .map(|(q, chosen)| {
            let topic = q.trim_start_matches("Tell me about ").trim_end_matches('.');
            let fact = chosen.split(": ").nth(1).and_then(|f| f.split(". ").next()).expect("a fact");
            let rejected = format!("{topic} is a place in the town, and {fact}.");
            PreferenceExample::from_chat(llm.tokenizer(), q, chosen, &rejected, trainer.max_tokens())
                .unwrap()
                .expect("fits")
        })
        .collect();
    let (train, test) = pairs.split_at(14);
    let dpo = Dpo { beta: 0.1 };
    let held_out = dpo.prepare(&trainer, None, test.to_vec()).expect("reference log-probs");
    let before = dpo.rewards(&trainer, &held_out, None).expect("base rewards");
    assert_eq!((before.accuracy, before.pairs), (0.0, 6), "the reference's own margins are zero: {before:?}");

    // 14 pairs in batches of 4: 4 steps per epoch; held-out scored every 3 steps and at each epoch's end.
    let config =
        LoraTraining { epochs: 2, batch_size: 4, learning_rate: 2e-3, eval_every: 3, ..LoraTraining::default() };
    let started = Instant::now();
    let mut losses = Vec::new();
    let (lora, report) =
        trainer.train_with(&dpo, train.to_vec(), test, &config, None, |_, _, loss| losses.push(loss)).expect("trains");
    let after = dpo.rewards(&trainer, &held_out, Some(&lora)).expect("tuned rewards");
    eprintln!(
        "dpo: {} steps in {:.1} s, step losses {losses:?}, epoch rewards {:?}, held-out at steps {:?}: {:?}; \
         held-out reward accuracy {:.2}, margin {:.3}",
        report.steps,
        started.elapsed().as_secs_f64(),
        report.epoch_rewards,
        report.held_out_steps,
        report.held_out_rewards,
        after.accuracy,
        after.margin
    );
    assert!(
        (losses[0] - std::f32::consts::LN_2).abs() < 0.02,
        "the first loss is log 2 (policy = reference): {}",
        losses[0]
    );
    assert_eq!((report.steps, report.epoch_rewards.len()), (8, 2));
    assert_eq!((report.held_out_steps.as_slice(), report.held_out_rewards.len()), ([3, 4, 6, 8].as_slice(), 4));
    // The curve on the held-out pairs, measured during training, ends where the evaluation does.
    let last = report.held_out_rewards[3];
    assert!(
        (f64::from(last[0]) - after.accuracy).abs() < 1e-6 && (f64::from(last[1]) - after.margin).abs() < 0.05,
        "{last:?} vs {after:?}"
    );
    assert!(after.accuracy >= 5.0 / 6.0 && after.margin > 0.0, "held-out rewards {after:?}");

    // A second stage starts from the first (its reference) and returns both stacked.
    let second = Dpo { beta: 0.1 };
    let (stacked, _) = trainer
        .train_with(
            &second,
            train[..4].to_vec(),
            &[],
            &LoraTraining { epochs: 1, ..config.clone() },
            Some(&lora),
            |_, _, _| {},
        )
        .expect("second stage trains");
    assert_eq!(stacked.rank, 2 * config.rank);
    let kept = dpo.rewards(&trainer, &held_out, Some(&stacked)).expect("stacked rewards");
    assert!(kept.accuracy >= 5.0 / 6.0, "the stacked adapter lost the first stage: {kept:?}");
}
