//! GSM8K (Cobbe et al. 2021): grade-school word problems, answered by generation. The number
//! after `####` in the reply must equal the reference. A base model sees lm-evaluation-harness's
//! few-shot "Question: … Answer: …" prompt; a chat model is asked in its chat format, 0-shot,
//! with the calculator tool, as it was tuned.

use crate::error::Result;
use crate::eval::docs::{parse, read};
use crate::eval::{GenItem, Items, Loaded, Metric, Sources, Task};
use std::path::Path;

pub struct Gsm8k;

/// The final answer of a GSM8K solution or reply: the number after the last `####`, with
/// thousands separators, a dollar sign and a trailing full stop removed.
pub fn final_answer(text: &str) -> Option<String> {
    let after = &text[text.rfind("####")? + 4..];
    let token = after.split_whitespace().next()?;
    let n: String = token
        .trim_start_matches('$')
        .trim_end_matches('.')
        .chars()
        .filter(|&c| c != ',')
        .collect();
    let ok = !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
        && n.chars().any(|c| c.is_ascii_digit());
    ok.then_some(n)
}

fn items(path: &Path) -> Result<(Vec<GenItem>, crate::eval::Skipped)> {
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

#[cfg(test)]
mod tests {
    use super::final_answer;

    #[test]
    fn final_answers_are_read_as_gsm8k_writes_them() {
        assert_eq!(final_answer("so 48/2 = 24\n#### 72").as_deref(), Some("72"));
        assert_eq!(final_answer("#### 1,234.").as_deref(), Some("1234"));
        assert_eq!(final_answer("#### $-5").as_deref(), Some("-5"));
        assert_eq!(final_answer("#### 3 #### 4").as_deref(), Some("4"));
        assert_eq!(final_answer("the answer is 7"), None);
        assert_eq!(final_answer("#### seven"), None);
    }
}
