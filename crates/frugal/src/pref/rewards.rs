//! GRPO's prompts and verifiable rewards. A synthetic arithmetic task a small model can learn
//! ("What is 17 + 5?"), and GSM8K's word problems; both are answered the way the SFT data taught
//! (GSM8K's worked answers): a final line `#### <number>`. The reward is 1 for the right
//! number, plus a small format reward for a reply that ends cleanly with a `####` line.

use super::data::shuffle;
use crate::chat::{ChatFormat, Conversation, Message, PartKind, Role};
use crate::data::jsonl::for_each_line;
use crate::error::Result;
use crate::eval::tasks::final_answer;
use std::path::Path;

/// A prompt and, for verifiable tasks, its answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub prompt: Conversation,
    pub answer: Option<String>,
}

fn user(text: String, answer: Option<String>) -> Problem {
    Problem {
        prompt: Conversation {
            messages: vec![Message::text(Role::User, text)],
        },
        answer,
    }
}

/// Every "What is a op b?" with 0 ≤ a, b ≤ `max_operand` and op in `ops` (of `+ - *`);
/// subtraction keeps a ≥ b so answers stay natural numbers. Shuffled with `seed`.
pub fn arithmetic(max_operand: u32, ops: &str, seed: u64) -> Vec<Problem> {
    let mut out = Vec::new();
    for op in ops.chars() {
        for a in 0..=max_operand {
            for b in 0..=max_operand {
                let v = match op {
                    '+' => a + b,
                    '-' if a >= b => a - b,
                    '*' => a * b,
                    _ => continue,
                };
                out.push(user(format!("What is {a} {op} {b}?"), Some(v.to_string())));
            }
        }
    }
    shuffle(&mut out, seed);
    out
}

/// GSM8K rows (`{"question", "answer"}`): the question as the prompt, the number after
/// `####` as the answer. Returns the problems and (rows skipped, first reason).
pub fn gsm8k(path: &Path) -> Result<(Vec<Problem>, usize, Option<String>)> {
    let (mut out, mut skipped, mut first) = (Vec::new(), 0, None);
    for_each_line(path, |line_no, line| {
        let row: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                skipped += 1;
                first.get_or_insert(format!("line {line_no}: {e}"));
                return Ok(());
            }
        };
        match (
            row["question"].as_str(),
            row["answer"].as_str().and_then(final_answer),
        ) {
            (Some(q), Some(a)) => out.push(user(q.to_string(), Some(a))),
            _ => {
                skipped += 1;
                first.get_or_insert(format!(
                    "line {line_no}: needs \"question\" and an \"answer\" ending in \"#### <number>\""
                ));
            }
        }
        Ok(())
    })?;
    Ok((out, skipped, first))
}

/// The reply's own text: tool calls and their outputs left out, so a number the calculator
/// printed is not taken for the model's answer.
pub fn reply_text(fmt: &ChatFormat, tokens: &[u32]) -> String {
    fmt.parse_reply(tokens)
        .parts
        .iter()
        .filter(|p| p.kind == PartKind::Text)
        .map(|p| p.text.as_str())
        .collect()
}

/// How one reply scored.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Scored {
    pub reward: f64,
    pub correct: bool,
    /// Ended with the end-of-turn token and gave a `#### <number>` answer.
    pub well_formed: bool,
}

/// The verifiable reward of a reply whose own text is `text`; `finished` when it ended with
/// `<|assistant_end|>` rather than running out of room.
pub fn verify(text: &str, finished: bool, answer: &str, format_reward: f64) -> Scored {
    let given = final_answer(text);
    let same = |a: &str, b: &str| match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => (x - y).abs() < 1e-9,
        _ => a == b,
    };
    let correct = given.as_deref().is_some_and(|g| same(g, answer));
    let well_formed = finished && given.is_some();
    Scored {
        reward: f64::from(u8::from(correct)) + format_reward * f64::from(u8::from(well_formed)),
        correct,
        well_formed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_problems_are_complete_and_right() {
        let p = arithmetic(3, "+-*", 1);
        // 16 sums, 10 differences with a ≥ b, 16 products.
        assert_eq!(p.len(), 16 + 10 + 16);
        for q in &p {
            let text = &q.prompt.messages[0].parts[0].text;
            let w: Vec<&str> = text
                .trim_start_matches("What is ")
                .trim_end_matches('?')
                .split(' ')
                .collect();
            let (a, b): (i64, i64) = (w[0].parse().unwrap(), w[2].parse().unwrap());
            let v = match w[1] {
                "+" => a + b,
                "-" => a - b,
                _ => a * b,
            };
            assert_eq!(q.answer.as_deref(), Some(v.to_string().as_str()), "{text}");
            assert!(v >= 0);
        }
        // The seed shuffles; the set stays the same.
        assert_ne!(p, arithmetic(3, "+-*", 2));
        assert_eq!(p.len(), arithmetic(3, "+-*", 2).len());
    }

    #[test]
    fn rewards_follow_the_answer_and_the_format() {
        let s = verify("7 + 5 = 12\n#### 12", true, "12", 0.1);
        assert!(s.correct && s.well_formed);
        assert!((s.reward - 1.1).abs() < 1e-12);
        // Right number but cut off: no format reward.
        let s = verify("#### 12.0", false, "12", 0.1);
        assert!(s.correct && !s.well_formed && s.reward == 1.0);
        // Wrong number, good format.
        let s = verify("#### 13", true, "12", 0.1);
        assert!(!s.correct && s.well_formed && (s.reward - 0.1).abs() < 1e-12);
        // No answer line at all.
        assert_eq!(verify("twelve", true, "12", 0.1), Scored::default());
    }
}
