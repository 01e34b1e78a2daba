//! GSM8K (Cobbe et al. 2021): grade-school word problems, answered by generation. The number
//! after `####` in the reply must equal the reference. A base model sees lm-evaluation-harness's
//! few-shot "Question: … Answer: …" prompt; a chat model is asked in its chat format, 0-shot,
//! with the calculator tool, as it was tuned.

use crate::docs::{parse, read};
use crate::{GenItem, Items, Loaded, Metric, Sources, Task};
use base::Result;
use data::gsm8k::final_answer;
use std::path::Path;

pub struct Gsm8k;

fn items(path: &Path) -> Result<(Vec<GenItem>, crate::Skipped)> {
    Ok(parse(path, &read(path)?, |r| {
        let (q, a) = (r.str("question")?, r.str("answer")?);
        let answer = final_answer(a)
            .ok_or_else(|| format!("row {}: the answer has no \"#### <number>\"", r.index))?;
        Ok(GenItem {
            question: q.to_string(),
            answer,
            solution: format!("Question: {q}\nAnswer: {a}"),
        })
    }))
}

impl Task for Gsm8k {
    fn name(&self) -> &'static str {
        "gsm8k"
    }
    fn source(&self) -> &'static str {
        "GSM8K test"
    }
    fn metric(&self) -> Metric {
        Metric::ExactMatch
    }
    fn shots(&self) -> usize {
        5
    }
    fn load(&self, src: &Sources) -> Result<Loaded> {
        let (test, mut skipped) = items(&src.file("gsm8k/test.jsonl", "chat")?)?;
        let (train, s) = items(&src.file("gsm8k/train.jsonl", "chat")?)?;
        skipped.count += s.count;
        Ok(Loaded {
            items: Items::Gen(test),
            shots_from: Some(Items::Gen(train)),
            skipped,
        })
    }
}
