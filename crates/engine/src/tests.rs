use super::*;
use data::chat::{ChatFormat, Conversation, Message, Role};
use model::Llama;
use train::config::Config;

/// A mock model that follows a script: while the sequence so far is a prefix of `script` it
/// predicts the script's next token, otherwise `off_script`. The cache is the sequence itself.
struct Script {
    vocab: usize,
    ctx: usize,
    script: Vec<u32>,
    off_script: u32,
}

impl LanguageModel for Script {
    type Cache = Vec<u32>;
    fn vocab_size(&self) -> usize {
        self.vocab
    }
    fn context_len(&self) -> usize {
        self.ctx
    }
    fn new_cache(&self) -> Vec<u32> {
        Vec::new()
    }
    fn cache_len(&self, c: &Vec<u32>) -> usize {
        c.len()
    }
    fn forward(&self, batch: &mut [(&mut Vec<u32>, &[u32])], logits: &mut [f32]) {
        for (i, (cache, new)) in batch.iter_mut().enumerate() {
            assert!(!new.is_empty());
            cache.extend_from_slice(new);
            assert!(cache.len() <= self.ctx, "the engine overfilled the context");
            let on = self.script.starts_with(cache) && cache.len() < self.script.len();
            let next = if on {
                self.script[cache.len()]
            } else {
                self.off_script
            };
            let row = &mut logits[i * self.vocab..(i + 1) * self.vocab];
            row.fill(0.0);
            row[next as usize] = 10.0;
        }
    }
}

fn byte_tok() -> Tokenizer {
    Tokenizer::bytes_only(bpe::DEFAULT_SPECIALS).unwrap()
}

fn request(prompt: Vec<u32>, max_tokens: usize, stop: Vec<u32>) -> Request {
    Request {
        prompt,
        sampling: SamplingParams::greedy(),
        max_tokens,
        stop,
        seed: 0,
    }
}

#[test]
fn tool_call_round_trip() {
    let tok = byte_tok();
    let f = ChatFormat::new(&tok).unwrap();
    let t = f.tokens().unwrap();
    let conv = Conversation {
        messages: vec![Message::text(Role::User, "What is 6*7?")],
    };
    let prompt = f.render_prompt(&conv, 1000).unwrap();
    let mut script = prompt.clone();
    script.push(t.python_start);
    script.extend(tok.encode("6 * 7"));
    script.push(t.python_end);
    script.push(t.output_start);
    script.extend(tok.encode("42"));
    script.push(t.output_end);
    script.extend(tok.encode("It is 42."));
    script.push(t.assistant_end);
    // The model continues only if the engine forced the right answer into the stream.
    let model = Script {
        vocab: tok.vocab_size(),
        ctx: 1000,
        script: script.clone(),
        off_script: b'?' as u32,
    };
    let tools = Tools { tok: &tok, t };
    let mut events = Vec::new();
    let out = generate(
        &model,
        &[request(prompt.clone(), 100, vec![t.assistant_end])],
        Some(&tools),
        |e| {
            events.push(e);
            true
        },
    )
    .unwrap();
    let c = &out[0];
    assert_eq!(c.finish, Finish::Stop);
    assert_eq!(c.stop_token, Some(t.assistant_end));
    assert_eq!(c.tokens, script[prompt.len()..script.len() - 1]);
    let forced: Vec<u32> = events
        .iter()
        .filter(|e| e.forced)
        .map(|e| e.token)
        .collect();
    assert_eq!(
        forced,
        [vec![t.output_start], tok.encode("42"), vec![t.output_end]].concat()
    );
    assert_eq!(
        f.parse_reply(&c.tokens).display(),
        "[calc: 6 * 7 = 42]It is 42."
    );

    // Without tools the model sees no output and goes off script.
    let out = generate(
        &model,
        &[request(prompt.clone(), 100, vec![])],
        None,
        |_| true,
    )
    .unwrap();
    assert_ne!(out[0].tokens, c.tokens);
    // A bad expression is answered with an error, not a crash.
    assert!(tools.answer(&tok.encode("rm -rf /")).len() > 2);
}

#[test]
fn stop_max_tokens_context_and_cancel() {
    let script: Vec<u32> = (0..100).collect();
    let model = Script {
        vocab: 128,
        ctx: 20,
        script,
        off_script: 127,
    };
    let p = vec![0, 1, 2, 3];
    let run = |r: Request| generate(&model, &[r], None, |_| true).unwrap().remove(0);
    let c = run(request(p.clone(), 5, vec![]));
    assert_eq!((c.tokens, c.finish), (vec![4, 5, 6, 7, 8], Finish::Length));
    let c = run(request(p.clone(), 50, vec![7]));
    assert_eq!(
        (c.tokens, c.finish, c.stop_token),
        (vec![4, 5, 6], Finish::Stop, Some(7))
    );
    // The context of 20 ends the reply at 16 new tokens, and the mock checks it is never overfilled.
    let c = run(request(p.clone(), 50, vec![]));
    assert_eq!((c.tokens.len(), c.finish), (16, Finish::Length));
    assert_eq!(run(request(p.clone(), 0, vec![])).tokens.len(), 0);
    // Cancelling one sequence leaves the other running.
    let reqs = [
        request(p.clone(), 10, vec![]),
        request(p.clone(), 10, vec![]),
    ];
    let out = generate(&model, &reqs, None, |e| !(e.seq == 1 && e.token == 6)).unwrap();
    assert_eq!(
        (out[1].tokens.clone(), out[1].finish),
        (vec![4, 5, 6], Finish::Cancelled)
    );
    assert_eq!((out[0].tokens.len(), out[0].finish), (10, Finish::Length));
    // Bad requests are refused up front.
    let e = generate(&model, &[request(vec![], 5, vec![])], None, |_| true).unwrap_err();
    assert!(e.to_string().contains("prompt is empty"));
    let e = generate(&model, &[request(vec![200], 5, vec![])], None, |_| true).unwrap_err();
    assert!(e.to_string().contains("outside the vocabulary"));
    let e = generate(&model, &[request(vec![1; 20], 5, vec![])], None, |_| true).unwrap_err();
    assert!(e.to_string().contains("context is 20"));
}

/// The tiny model with weights large enough that attention, not just the last token, decides
/// the next token: at the usual init, a bug in positions could pass a greedy comparison.
fn tiny() -> Llama {
    let cfg = Config::preset("tiny", &["model.init_std=0.3".into()]).unwrap();
    Llama::init(cfg.model, 3)
}

/// `tiny` with a mixture of experts in its second layer (configs/tiny-moe.toml).
fn tiny_moe() -> Llama {
    let cfg = Config::preset("tiny-moe", &["model.init_std=0.3".into()]).unwrap();
    Llama::init(cfg.model, 3)
}

/// `tiny` with multi-head latent attention (configs/tiny-mla.toml).
fn tiny_mla() -> Llama {
    let cfg = Config::preset("tiny-mla", &["model.init_std=0.3".into()]).unwrap();
    Llama::init(cfg.model, 3)
}

/// Latent attention decodes in the absorbed form (attention over the cached latents, W_UK
/// folded into the queries and W_UV applied after) and trains in the expanded one (per-head
/// keys and values): the logits agree at every position, and the cache holds only the latent
/// and the RoPE key.
#[test]
fn absorbed_latent_attention_equals_expanded() {
    let model = tiny_mla();
    cached_logits_match_training_forward_on(&model);
    let m = model.cfg.mla.clone().unwrap();
    let mut cache = model.new_cache();
    let mut logits = vec![0f32; model.cfg.vocab_size];
    model.forward(&mut [(&mut cache, &[5, 6, 7][..])], &mut logits);
    for (keys, values) in cache.layer_floats() {
        assert_eq!(keys, 3 * (m.kv_rank + m.rope_dim));
        assert_eq!(values, 0);
    }
    let gqa = tiny();
    assert_eq!(
        KvCache::bytes(&model) * 2,
        KvCache::bytes(&gqa),
        "tiny-mla keeps 16 floats per token and layer, tiny's grouped-query attention 32"
    );
}

#[test]
fn cached_equals_uncached_greedy() {
    for model in [tiny(), tiny_moe()] {
        cached_equals_uncached_greedy_on(&model);
    }
}

fn cached_equals_uncached_greedy_on(model: &Llama) {
    let prompts: Vec<Vec<u32>> = vec![
        vec![1],
        vec![5, 9, 2, 77, 3],
        (0..12).map(|i| i * 7 % 128).collect(),
    ];
    let expected: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| greedy_uncached(model, p, 100, &[]))
        .collect();
    // One at a time, and all three batched together (ragged prefill, then ragged decode).
    for p in &prompts {
        let got = generate(model, &[request(p.clone(), 100, vec![])], None, |_| true).unwrap();
        assert_eq!(got[0].tokens.len() + p.len(), model.cfg.context_len);
        assert_eq!(got[0].tokens, greedy_uncached(model, p, 100, &[]));
    }
    let reqs: Vec<Request> = prompts
        .iter()
        .map(|p| request(p.clone(), 100, vec![]))
        .collect();
    let got = generate(model, &reqs, None, |_| true).unwrap();
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(&g.tokens, e);
    }
}

#[test]
fn cached_logits_match_training_forward() {
    // Multi-token prediction modules are training-only: the engine runs the model without them.
    let mtp = Config::preset("tiny-mtp", &["model.init_std=0.3".into()]).unwrap();
    // Qwen2's q/k/v biases (made nonzero) and Llama 3.1's RoPE scaling take the cached path too.
    let sets = [
        "model.init_std=0.3",
        "model.qkv_bias=true",
        "model.rope_scaling={type=\"llama3\", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_context=16}",
    ]
    .map(String::from);
    let mut biased = Llama::init(Config::preset("tiny", &sets).unwrap().model, 4);
    assert!(biased.cfg.qkv_bias && biased.cfg.rope_scaling.is_some());
    for spec in biased.params.specs.clone() {
        if spec.name.ends_with(".bias") {
            let mut rng = tensor::Rng::new(spec.offset as u64);
            rng.fill_normal(&mut biased.params.data[spec.range()], 0.5);
        }
    }
    for model in [tiny(), tiny_moe(), Llama::init(mtp.model, 3), biased] {
        cached_logits_match_training_forward_on(&model);
    }
}

fn cached_logits_match_training_forward_on(model: &Llama) {
    let seq: Vec<u32> = (0..20).map(|i| (i * 37 + 11) % 128).collect();
    let mut ws = model.workspace(1, seq.len());
    let full = model.logits(&seq, &mut ws);
    let v = model.cfg.vocab_size;
    // Prefill 7 tokens, then feed the rest one at a time, comparing every position.
    let mut cache = model.new_cache();
    let mut row = vec![0f32; v];
    model.forward(&mut [(&mut cache, &seq[..7])], &mut row);
    // Worst difference relative to the row's largest logit (summation order differs).
    let mut worst = 0f32;
    let mut check = |pos: usize, row: &[f32]| {
        let want = &full[pos * v..(pos + 1) * v];
        let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
        for (a, b) in row.iter().zip(want) {
            worst = worst.max((a - b).abs() / scale);
        }
    };
    check(6, &row);
    for pos in 7..seq.len() {
        model.forward(&mut [(&mut cache, &seq[pos..pos + 1])], &mut row);
        check(pos, &row);
    }
    assert!(worst < 1e-4, "cached logits differ by {worst}");
}

#[test]
fn batched_sampling_equals_one_at_a_time() {
    let model = tiny();
    let mk = |p: Vec<u32>, seed: u64| Request {
        prompt: p,
        sampling: SamplingParams {
            temperature: 1.0,
            top_k: 20,
            top_p: 0.9,
            repetition_penalty: 1.3,
        },
        max_tokens: 12,
        stop: vec![3],
        seed,
    };
    let reqs = vec![mk(vec![1, 2], 1), mk(vec![4; 9], 2), mk(vec![9], 3)];
    let alone: Vec<Completion> = reqs
        .iter()
        .map(|r| {
            generate(&model, std::slice::from_ref(r), None, |_| true)
                .unwrap()
                .remove(0)
        })
        .collect();
    let together = generate(&model, &reqs, None, |_| true).unwrap();
    assert_eq!(alone, together);
    // A seed reproduces, another seed differs.
    let again = generate(&model, &reqs, None, |_| true).unwrap();
    assert_eq!(together, again);
    let other = generate(&model, &[mk(vec![1, 2], 99)], None, |_| true).unwrap();
    assert_ne!(other[0].tokens, together[0].tokens);
}

#[test]
fn batched_scoring_equals_one_token_at_a_time() {
    batched_scoring_on(&tiny());
    batched_scoring_on(&tiny_mla());
}

fn batched_scoring_on(model: &Llama) {
    // Ragged: a fresh prompt, a cache extended by several tokens, and by one.
    let seqs: Vec<(Vec<u32>, Vec<u32>)> = vec![
        (vec![], (0..9).map(|i| i * 11 % 128).collect()),
        (vec![3, 1, 4, 1, 5], vec![9, 2, 6, 5]),
        ((0..20).collect(), vec![77]),
    ];
    let targets: Vec<Vec<u32>> = seqs
        .iter()
        .map(|(_, new)| new.iter().map(|&t| (t * 5 + 3) % 128).collect())
        .collect();
    let run = |batched: bool| {
        let mut caches: Vec<KvCache> = seqs
            .iter()
            .map(|(prefix, _)| {
                let mut c = model.new_cache();
                if !prefix.is_empty() {
                    let mut logits = vec![0f32; model.cfg.vocab_size];
                    model.forward(&mut [(&mut c, prefix.as_slice())], &mut logits);
                }
                c
            })
            .collect();
        let mut batch: Vec<(&mut KvCache, &[u32])> = caches
            .iter_mut()
            .zip(&seqs)
            .map(|(c, (_, new))| (c, new.as_slice()))
            .collect();
        let t: Vec<&[u32]> = targets.iter().map(Vec::as_slice).collect();
        if batched {
            model.score(&mut batch, &t)
        } else {
            model::language_model::one_at_a_time(model, &mut batch, &t)
        }
    };
    let (fast, slow) = (run(true), run(false));
    let mut greedy = 0;
    for (f, s) in fast.iter().zip(&slow) {
        assert_eq!(f.len(), s.len());
        for (a, b) in f.iter().zip(s) {
            assert!((a.logprob - b.logprob).abs() < 1e-4, "{a:?} vs {b:?}");
            assert!(a.logprob < 0.0);
            assert_eq!(a.greedy, b.greedy);
            greedy += usize::from(a.greedy);
        }
    }
    // The targets are arbitrary, so few are the model's first choice; scoring the greedy
    // tokens themselves must mark every one.
    assert!(greedy < 14);
    let mut c = model.new_cache();
    let prompt = [1u32, 2, 3];
    let next = greedy_uncached(model, &prompt, 4, &[]);
    let mut fed = prompt.to_vec();
    fed.extend_from_slice(&next[..3]);
    let s = model.score(
        &mut [(&mut c, &fed[..])],
        &[&[&fed[1..], &next[3..4]].concat()],
    );
    assert!(s[0][2..].iter().all(|t| t.greedy), "{:?}", s[0]);
}

#[test]
fn token_score_is_a_log_softmax() {
    let logits = [1.0f32, 3.0, 2.0, 3.0];
    let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
    for t in 0..4u32 {
        let s = model::language_model::token_score(&logits, t);
        assert!((s.logprob - ((logits[t as usize] as f64).exp() / z).ln()).abs() < 1e-6);
        // Ties go to the first maximum, as argmax does.
        assert_eq!(s.greedy, t == 1);
    }
}

#[test]
fn sequences_joining_a_running_batch_generate_what_they_would_alone() {
    let model = tiny();
    let sampled = |prompt: Vec<u32>, seed: u64| Request {
        prompt,
        sampling: SamplingParams {
            temperature: 0.9,
            top_k: 20,
            top_p: 0.95,
            repetition_penalty: 1.1,
        },
        max_tokens: 12,
        stop: vec![],
        seed,
    };
    let reqs = [
        sampled(vec![1, 2, 3], 7),
        sampled(vec![9; 7], 8),
        request(vec![4, 40, 44], 9, vec![]),
        sampled(vec![5], 10),
    ];
    let alone: Vec<Completion> = reqs
        .iter()
        .map(|r| generate(&model, std::slice::from_ref(r), None, |_| true).unwrap()[0].clone())
        .collect();
    // Sequence 0 starts alone; 1 and 2 join after three steps (their prefill rides with 0's
    // decode), 3 after five. Tokens come in each sequence's order.
    let mut b = Batcher::new(&model, None);
    let mut streamed = vec![Vec::new(); reqs.len()];
    let mut got: Vec<Option<Completion>> = vec![None; reqs.len()];
    let mut steps = 0;
    b.admit(0, reqs[0].clone()).unwrap();
    while !b.is_empty() || got.iter().any(Option::is_none) {
        if steps == 3 {
            b.admit(1, reqs[1].clone()).unwrap();
            b.admit(2, reqs[2].clone()).unwrap();
        }
        if steps == 5 {
            b.admit(3, reqs[3].clone()).unwrap();
            assert_eq!(b.len(), 4, "all four run together");
        }
        for (id, c) in b.step(|e| {
            streamed[e.seq].push(e.token);
            true
        }) {
            got[id] = Some(c);
        }
        steps += 1;
        assert!(steps < 100, "the batch never drained");
    }
    for (i, (g, a)) in got.iter().zip(&alone).enumerate() {
        assert_eq!(g.as_ref().unwrap(), a, "sequence {i}");
        assert_eq!(streamed[i], a.tokens, "sequence {i}'s streamed tokens");
    }
    // Cancelling ends one sequence with what it has; the others go on. A bad request is
    // refused without touching the batch; an unknown id cancels nothing.
    let mut b = Batcher::new(&model, None);
    b.admit(0, reqs[0].clone()).unwrap();
    b.admit(1, reqs[1].clone()).unwrap();
    assert!(b.admit(2, request(vec![], 4, vec![])).is_err());
    b.step(|_| true);
    b.step(|_| true);
    assert!(b.cancel(1) && !b.cancel(1) && !b.cancel(5));
    let done = b.step(|_| true);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].0, 1);
    assert_eq!(done[0].1.finish, Finish::Cancelled);
    assert_eq!(done[0].1.tokens, alone[1].tokens[..2]);
    assert_eq!(b.ids().collect::<Vec<_>>(), vec![0]);
}

/// tiny-mtp trained on one sequence that cycles through 12 tokens, so that the main model and
/// its first multi-token prediction module both learn what comes next and the drafts are
/// mostly right.
fn cycling_mtp() -> Llama {
    let cfg = Config::preset("tiny-mtp", &["train.lr=0.01".into()]).unwrap();
    let (b, t) = (cfg.train.batch_size, cfg.train.seq_len);
    let cycle = [3u32, 17, 42, 8, 99, 23, 61, 5, 77, 12, 30, 64];
    let seq: Vec<u32> = (0..b * (t + 1)).map(|i| cycle[i % cycle.len()]).collect();
    let x: Vec<u32> = seq.chunks(t + 1).flat_map(|s| s[..t].to_vec()).collect();
    let y: Vec<u32> = seq.chunks(t + 1).flat_map(|s| s[1..].to_vec()).collect();
    let mut model = Llama::init(cfg.model.clone(), 1);
    let mut opt = train::optim::Optimizer::new(&cfg.train, &model.params);
    let (mut ws, mut grads) = (model.workspace(b, t), vec![0f32; model.params.len()]);
    for _ in 0..200 {
        grads.fill(0.0);
        model.forward_backward(&x, &y, &mut grads, 1.0 / (b * t) as f32, &mut ws);
        opt.update(&mut model.params.data, &grads, 1.0);
    }
    model
}

#[test]
fn speculative_decoding_equals_plain_greedy() {
    let random = Llama::init(
        Config::preset("tiny-mtp", &["model.init_std=0.3".into()])
            .unwrap()
            .model,
        3,
    );
    let trained = cycling_mtp();
    let prompts: Vec<Vec<u32>> = vec![
        vec![1],
        vec![3, 17, 42],
        vec![99, 23, 61, 5, 77],
        (0..12).map(|i| i * 7 % 128).collect(),
        (0..31).map(|i| i * 5 % 128).collect(),
    ];
    let mut totals = Vec::new();
    for model in [&random, &trained] {
        let mut total = SpecStats::default();
        for p in &prompts {
            // Through the context, to a max_tokens that ends on an accepted draft or not, and
            // to a stop token the plain reply produces.
            let plain =
                generate(model, &[request(p.clone(), 100, vec![])], None, |_| true).unwrap();
            let stop_at = plain[0].tokens.get(6).copied();
            for (max, stop) in [
                (100, vec![]),
                (4, vec![]),
                (5, vec![]),
                (100, stop_at.into_iter().collect()),
            ] {
                let want = generate(
                    model,
                    &[request(p.clone(), max, stop.clone())],
                    None,
                    |_| true,
                )
                .unwrap()
                .remove(0);
                let (got, stats) = greedy_speculative(model, p, max, &stop).unwrap();
                assert_eq!(
                    got.tokens, want.tokens,
                    "prompt {p:?}, max {max}, stop {stop:?}"
                );
                assert_eq!((got.finish, got.stop_token), (want.finish, want.stop_token));
                assert!(stats.passes <= want.tokens.len());
                total.drafted += stats.drafted;
                total.accepted += stats.accepted;
            }
        }
        totals.push(total);
    }
    // Both paths ran: the random module's drafts are mostly rejected, the trained one's
    // mostly accepted.
    assert!(totals[0].acceptance() < 0.5, "random: {:?}", totals[0]);
    assert!(totals[1].acceptance() > 0.8, "trained: {:?}", totals[1]);
}

#[test]
fn speculative_decoding_needs_a_prediction_module() {
    let err = greedy_speculative(&tiny(), &[1, 2], 8, &[]).unwrap_err();
    assert!(err.to_string().contains("multi-token prediction"), "{err}");
}

/// Echo and logprobs through the batcher: the prompt's scores equal the model's `score` (the
/// evaluation path) and come with the first token; each sampled token's score is taken on the
/// model's own logits, whatever the temperature; with max_tokens 0 the prompt is scored and
/// nothing generated. The Llama's one-pass `forward_all` equals the default one-at-a-time one.
#[test]
fn reports_score_prompts_as_evaluation_does_and_tokens_as_sampled() {
    let m = tiny();
    let prompt: Vec<u32> = (0..12u32).map(|i| (i * 7 + 3) % 64).collect();
    let mut cache = m.new_cache();
    let want = m.score(&mut [(&mut cache, &prompt[..11])], &[&prompt[1..]]);
    let report = Report {
        top: Some(2),
        prompt: true,
    };
    let sampled = |max_tokens| Request {
        prompt: prompt.clone(),
        sampling: SamplingParams {
            temperature: 1.5,
            ..SamplingParams::default()
        },
        max_tokens,
        stop: Vec::new(),
        seed: 5,
    };
    let mut b = Batcher::new(&m, None);
    b.admit_reporting(0, sampled(3), report).unwrap();
    b.admit_reporting(1, sampled(0), report).unwrap();
    let mut events = Vec::new();
    let mut done = Vec::new();
    while !b.is_empty() {
        done.extend(b.step(|e| {
            events.push(e);
            true
        }));
    }
    let check = |got: &[TokenLogprob]| {
        assert_eq!(got.len(), 11);
        for (g, w) in got.iter().zip(&want[0]) {
            assert!((g.logprob - w.logprob).abs() < 1e-5, "{g:?} against {w:?}");
            assert_eq!(g.top.len(), 2);
            assert_eq!(g.top[0].0 == g.token, w.greedy);
        }
    };
    check(&events[0].prompt_logprobs);
    assert!(events[1..].iter().all(|e| e.prompt_logprobs.is_empty()));
    let zero = done.iter().find(|(id, _)| *id == 1).unwrap();
    assert!(zero.1.tokens.is_empty());
    check(&zero.1.prompt_logprobs);
    // Each sampled token, scored on the logits after the prompt and the tokens before it.
    assert_eq!(events.len(), 3);
    let mut seq = prompt.clone();
    for e in &events {
        let mut c = m.new_cache();
        let targets: Vec<u32> = seq[1..].iter().copied().chain([e.token]).collect();
        let s = m.score(&mut [(&mut c, &seq[..])], &[&targets]);
        let lp = e.logprob.as_ref().unwrap();
        assert!((lp.logprob - s[0].last().unwrap().logprob).abs() < 1e-5);
        seq.push(e.token);
    }
    // One pass over the new tokens, or one token at a time: the same logits.
    let (mut one, mut all) = (Vec::new(), Vec::new());
    let mut c = m.new_cache();
    m.forward_all(&mut [(&mut c, &prompt[..])], &mut |_, _, l| {
        all.push(l.to_vec())
    });
    let mut c = m.new_cache();
    let mut logits = vec![0f32; m.vocab_size()];
    for t in &prompt {
        m.forward(&mut [(&mut c, std::slice::from_ref(t))], &mut logits);
        one.push(logits.clone());
    }
    for (a, b) in all.iter().zip(&one) {
        tensor::check::assert_close(a, b, 1e-4, "forward_all");
    }
}
