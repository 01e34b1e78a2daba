use super::*;
use crate::loglik::{score, score_reference, Scored};
use crate::metrics::{centered, multiple_choice};
use crate::prompt::{ll_request, pick, LlRequest};
use crate::tasks::{capitalize, preprocess};
use bpe::Tokenizer;
use model::LanguageModel;
use model::Llama;
use train::config::Config;

fn byte_tok() -> Tokenizer {
    Tokenizer::bytes_only(bpe::DEFAULT_SPECIALS).unwrap()
}

/// A mock whose answers are known: after a sequence that is a prefix of one of `likes`, it
/// puts logit 8 on that sequence's next token; elsewhere every token is equally likely.
struct Oracle {
    vocab: usize,
    likes: Vec<Vec<u32>>,
}

impl LanguageModel for Oracle {
    type Cache = Vec<u32>;
    fn vocab_size(&self) -> usize {
        self.vocab
    }
    fn context_len(&self) -> usize {
        1 << 20
    }
    fn new_cache(&self) -> Vec<u32> {
        Vec::new()
    }
    fn cache_len(&self, c: &Vec<u32>) -> usize {
        c.len()
    }
    fn forward(&self, batch: &mut [(&mut Vec<u32>, &[u32])], logits: &mut [f32]) {
        for (i, (cache, new)) in batch.iter_mut().enumerate() {
            cache.extend_from_slice(new);
            let row = &mut logits[i * self.vocab..(i + 1) * self.vocab];
            row.fill(0.0);
            for l in &self.likes {
                if l.len() > cache.len() && l.starts_with(cache) {
                    row[l[cache.len()] as usize] = 8.0;
                }
            }
        }
    }
}

fn mc(context: &str, choices: &[&str], gold: usize) -> McItem {
    McItem::shared(
        context.into(),
        choices.iter().map(|c| c.to_string()).collect(),
        gold,
    )
}

/// Hand-made tasks with known answers: the oracle "knows" some items' gold continuations, so
/// those must be right under every metric; on the others it is uniform, so the summed
/// log-likelihood prefers the shortest choice and the per-character one ties (first wins).
#[test]
fn multiple_choice_metrics_on_known_answers() {
    let tok = byte_tok();
    let bos = tok.special_id("<|bos|>").unwrap();
    let items = vec![
        mc("The sky is", &[" green", " blue"], 1),
        mc("Two plus two is", &[" five", " four", " three"], 1),
        mc("Cats say", &[" meow", " woof"], 1),
        mc("x", &[" aaaa", " b", " cc"], 1),
        mc("y", &[" dd", " e", " ffff"], 2),
    ];
    let mut likes = Vec::new();
    let requests: Vec<Vec<LlRequest>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let reqs: Vec<LlRequest> = item
                .choices
                .iter()
                .map(|(c, x)| ll_request(&tok, bos, c, x, 1000))
                .collect();
            if i < 3 {
                likes.push(reqs[item.gold].tokens.clone());
            }
            reqs
        })
        .collect();
    let oracle = Oracle {
        vocab: tok.vocab_size(),
        likes,
    };
    let scores = score(&oracle, &requests, 16, |_| {});
    for (i, s) in scores.iter().enumerate() {
        let gold = items[i].gold;
        assert_eq!(s[gold].greedy, i < 3, "item {i}: {s:?}");
        let best = (0..s.len())
            .max_by(|&a, &b| s[a].logprob.total_cmp(&s[b].logprob))
            .unwrap();
        if i < 3 {
            assert_eq!(best, gold);
        }
    }
    let idx: Vec<usize> = (0..items.len()).collect();
    let m = multiple_choice(&items, &idx, &scores);
    // acc: items 0-2 (known), 3 (" b" is shortest and gold); 4 is wrong (" e" is shortest).
    assert!((m.acc - 4.0 / 5.0).abs() < 1e-12, "{m:?}");
    // acc_norm: 0-2 known; 3 and 4 tie per character and the first choice wins: wrong.
    assert!((m.acc_norm - 3.0 / 5.0).abs() < 1e-12, "{m:?}");
    assert!((m.greedy - 3.0 / 5.0).abs() < 1e-12);
    let chance = (0.5 + 1.0 / 3.0 + 0.5 + 1.0 / 3.0 + 1.0 / 3.0) / 5.0;
    assert!((m.chance - chance).abs() < 1e-12);
    assert_eq!(centered(chance, chance), 0.0);
    assert_eq!(centered(1.0, 0.25), 1.0);
    // A limited subset scores only its items.
    let sub = multiple_choice(&items, &[3, 4], &scores[3..]);
    assert_eq!((sub.acc, sub.acc_norm), (0.5, 0.0));
}

fn tiny() -> Llama {
    let cfg = Config::preset("tiny", &["model.init_std=0.3".into()]).unwrap();
    Llama::init(cfg.model, 11)
}

/// Requests of every shape the scorer meets: choices sharing a context (HellaSwag), contexts
/// that differ before a shared continuation (WinoGrande), a single choice (LAMBADA), one-token
/// continuations, and requests cut to the context so the continuation starts at token 1.
fn requests(ctx: usize) -> Vec<Vec<LlRequest>> {
    let seq = |seed: u32, n: usize| -> Vec<u32> {
        (0..n as u32).map(|i| (seed * 31 + i * 17) % 128).collect()
    };
    let req = |mut tokens: Vec<u32>, cont: usize| {
        tokens.insert(0, 1);
        LlRequest {
            cont_start: tokens.len() - cont,
            tokens,
            truncated: false,
        }
    };
    let shared = seq(1, 12);
    let mut groups = vec![(0..4)
        .map(|c| {
            req(
                [shared.clone(), seq(10 + c, 3 + c as usize)].concat(),
                3 + c as usize,
            )
        })
        .collect::<Vec<_>>()];
    let tail = seq(7, 5);
    groups.push(
        (0..2)
            .map(|c| req([seq(2, 6), vec![40 + c], tail.clone()].concat(), 5))
            .collect(),
    );
    groups.push(vec![req(seq(3, 20), 1)]);
    groups.push(vec![req(seq(4, 2), 1), req(seq(4, 2), 1)]);
    // Cut to the context: everything after <|bos|> is continuation.
    groups.push(vec![req(seq(5, ctx - 1), ctx - 1)]);
    groups
}

#[test]
fn shared_prefix_batched_scoring_matches_the_training_forward() {
    let model = tiny();
    let groups = requests(model.cfg.context_len);
    // Batches of every size: one group at a time, and all at once.
    for batch_tokens in [1, 40, 100_000] {
        let mut calls = 0;
        let got = score(&model, &groups, batch_tokens, |_| calls += 1);
        assert!(calls >= 1);
        for (g, s) in groups.iter().zip(&got) {
            for (r, x) in g.iter().zip(s) {
                let want: Scored = score_reference(&model, r);
                assert!(
                    (x.logprob - want.logprob).abs() < 1e-4,
                    "batch {batch_tokens}: {x:?} vs {want:?}"
                );
                assert_eq!(x.greedy, want.greedy);
            }
        }
    }
}

#[test]
fn continuation_tokens_start_after_the_common_tokenization() {
    let tok = byte_tok();
    let bos = tok.special_id("<|bos|>").unwrap();
    let r = ll_request(&tok, bos, "Question: 2+2\nAnswer:", " four", 1000);
    assert_eq!(r.tokens[0], bos);
    assert_eq!(
        tok.decode_lossy(&r.tokens[r.cont_start..]).unwrap(),
        " four"
    );
    assert!(!r.truncated);
    // Cut from the left to fit 8 tokens, <|bos|> kept, the continuation whole.
    let r = ll_request(&tok, bos, "a long context here", " ok", 8);
    assert_eq!(r.tokens.len(), 8);
    assert_eq!(r.tokens[0], bos);
    assert!(r.truncated);
    assert_eq!(tok.decode_lossy(&r.tokens[1..]).unwrap(), "here ok");
    assert_eq!(tok.decode_lossy(&r.tokens[r.cont_start..]).unwrap(), " ok");
    // A continuation longer than the context keeps its tail, scored from token 1.
    let r = ll_request(&tok, bos, "ctx", " a very long answer", 6);
    assert_eq!((r.tokens.len(), r.cont_start), (6, 1));
}

#[test]
fn few_shot_draws_are_seeded_per_item_and_never_the_item() {
    let groups = vec![0, 0, 1, 0, 1, 0, 0];
    let a = pick(&groups, 0, 3, Some(1), 1234, 1);
    assert_eq!(a.len(), 3);
    assert!(a.iter().all(|&j| groups[j] == 0 && j != 1));
    let mut sorted = a.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 3, "distinct: {a:?}");
    assert_eq!(a, pick(&groups, 0, 3, Some(1), 1234, 1), "reproducible");
    // Other items draw other examples; more shots than candidates gives all candidates.
    assert_ne!(pick(&groups, 0, 3, Some(2), 1234, 2), a);
    assert_eq!(pick(&groups, 1, 5, None, 1234, 0).len(), 2);
    assert!(pick(&groups, 0, 0, None, 1, 0).is_empty());
}

#[test]
fn hellaswag_text_is_cleaned_as_lm_eval_harness_does() {
    assert_eq!(
        preprocess("How to cook [title] Boil water. [step] Add salt.  "),
        "How to cook. Boil water. Add salt."
    );
    assert_eq!(capitalize("he starts"), "He starts");
    assert_eq!(capitalize("THE man"), "The man");
    assert_eq!(capitalize(""), "");
}

#[test]
fn task_names_parse_with_limits_and_unknown_names_are_refused() {
    let specs = TaskSpec::parse_list("hellaswag, mmlu:500").unwrap();
    assert_eq!(specs[1].name, "mmlu");
    assert_eq!(specs[1].limit, Some(500));
    assert_eq!(
        TaskSpec::parse_list("all").unwrap().len(),
        tasks::all().len()
    );
    let e = TaskSpec::parse_list("hellaswag,helaswag")
        .unwrap_err()
        .to_string();
    assert!(e.contains("helaswag") && e.contains("arc_easy"), "{e}");
    let e = TaskSpec::parse_list("mmlu:lots").unwrap_err().to_string();
    assert!(e.contains("lots"), "{e}");
}

#[test]
fn intervals_are_binomial_and_subsets_are_sized_from_them() {
    let t = |metric: &str, score: f64, n: usize| TaskResult {
        metric: metric.into(),
        score: Some(score),
        n,
        ..Default::default()
    };
    let ci = t("acc_norm", 0.5, 100).ci95().unwrap();
    assert!((ci - 0.098).abs() < 1e-9, "{ci}");
    assert_eq!(t("acc", 1.0, 50).ci95(), Some(0.0));
    assert_eq!(t("bits_per_byte", 2.1, 100).ci95(), None);
    assert_eq!(t("acc", 0.5, 0).ci95(), None);
    // 267 items keep the widest interval (p = 0.5) within ±6 points; 266 do not.
    assert_eq!(items_for_half_width(0.06), 267);
    assert!(t("acc", 0.5, 267).ci95().unwrap() <= 0.06);
    assert!(t("acc", 0.5, 266).ci95().unwrap() > 0.06);
}
