//! GRPO's prompts and verifiable rewards. A synthetic arithmetic task a small model can learn
//! ("What is 17 + 5?"), and GSM8K's word problems; both are answered the way the SFT data taught
//! (GSM8K's worked answers): a final line `#### <number>`. The reward is 1 for the right
//! number, plus a small format reward for a reply that ends cleanly with a `####` line.

use base::Result;
use data::chat::{ChatFormat, Conversation, Message, PartKind, Role};
use data::gsm8k::final_answer;
use data::jsonl::for_each_line;
use data::pairs::shuffle;
use std::path::Path;

/// A prompt and, for verifiable tasks, its answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub prompt: Conversation,
    pub answer: Option<String>,
    /// A worked answer in GSM8K's notation (`<<13+5=18>>` marks a calculator call), for
    /// cold-start SFT data.
    pub worked: Option<String>,
}

fn user(text: String, answer: Option<String>, worked: Option<String>) -> Problem {
    Problem {
        prompt: Conversation {
            messages: vec![Message::text(Role::User, text)],
        },
        answer,
        worked,
    }
}

/// Every "What is a op b?" with 0 ≤ a, b ≤ `max_operand` and op in `ops` (of `+ - *`);
/// subtraction keeps a ≥ b so answers stay natural numbers. `>` asks "Which is larger, a or
/// b?" (a ≠ b): comparison, the step below addition, which a model too small to add in its head
/// can still learn. Shuffled with `seed`.
pub fn arithmetic(max_operand: u32, ops: &str, seed: u64) -> Vec<Problem> {
    let mut out = Vec::new();
    for op in ops.chars() {
        for a in 0..=max_operand {
            for b in 0..=max_operand {
                let (q, v) = match op {
                    '+' => (format!("What is {a} + {b}?"), a + b),
                    '-' if a >= b => (format!("What is {a} - {b}?"), a - b),
                    '*' => (format!("What is {a} * {b}?"), a * b),
                    '>' if a != b => (format!("Which is larger, {a} or {b}?"), a.max(b)),
                    _ => continue,
                };
                let worked = if op == '>' {
                    format!("The larger of {a} and {b} is {v}.\n#### {v}")
                } else {
                    format!("{a} {op} {b} = <<{a}{op}{b}={v}>>{v}\n#### {v}")
                };
                out.push(user(q, Some(v.to_string()), Some(worked)));
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
            (Some(q), Some(a)) => out.push(user(
                q.to_string(),
                Some(a),
                row["answer"].as_str().map(str::to_string),
            )),
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

/// What a reply said: its own text (tool calls and outputs left out, so a number the
/// calculator printed is not taken for the model's answer), what the calculator returned, and
/// whether it ended with `<|assistant_end|>` rather than running out of room.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reply {
    pub text: String,
    pub tool_outputs: Vec<String>,
    pub finished: bool,
}

impl Reply {
    pub fn parse(fmt: &ChatFormat, tokens: &[u32], finished: bool) -> Self {
        let msg = fmt.parse_reply(tokens);
        let pick = |k: PartKind| msg.parts.iter().filter(move |p| p.kind == k);
        Reply {
            text: pick(PartKind::Text).map(|p| p.text.as_str()).collect(),
            tool_outputs: pick(PartKind::PythonOutput)
                .map(|p| p.text.trim().to_string())
                .collect(),
            finished,
        }
    }
}

/// How one reply scored.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Scored {
    pub reward: f64,
    pub correct: bool,
    /// Ended its turn and gave a `#### <number>` answer.
    pub well_formed: bool,
    /// A calculator call returned the answer.
    pub tool_right: bool,
}

/// The verifiable reward's parts: 1 for the right final answer, plus `format` for a
/// well-formed reply, `tool` when a calculator call returned the right number (a checked
/// intermediate step, which rewards setting up the computation even before the final line
/// copies it), and `closeness` · (1 − relative error) for a wrong number near the answer (a
/// graded signal while exact answers are still rare).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shaping {
    pub format: f64,
    pub tool: f64,
    pub closeness: f64,
}

fn same_number(a: &str, b: &str) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => (x - y).abs() < 1e-9,
        _ => a == b,
    }
}

pub fn verify(r: &Reply, answer: &str, s: Shaping) -> Scored {
    let given = final_answer(&r.text);
    let correct = given.as_deref().is_some_and(|g| same_number(g, answer));
    let well_formed = r.finished && given.is_some();
    let tool_right = r.tool_outputs.iter().any(|o| same_number(o, answer));
    let on = |b: bool| f64::from(u8::from(b));
    let near = match (
        given.as_deref().map(str::parse::<f64>),
        answer.parse::<f64>(),
    ) {
        (Some(Ok(g)), Ok(a)) if !correct => (1.0 - (g - a).abs() / a.abs().max(1.0)).max(0.0),
        _ => 0.0,
    };
    Scored {
        reward: on(correct)
            + s.format * on(well_formed)
            + s.tool * on(tool_right)
            + s.closeness * near,
        correct,
        well_formed,
        tool_right,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_problems_are_complete_and_right() {
        let p = arithmetic(3, "+-*>", 1);
        // 16 sums, 10 differences with a ≥ b, 16 products, 12 comparisons with a ≠ b.
        assert_eq!(p.len(), 16 + 10 + 16 + 12);
        for q in &p {
            let text = &q.prompt.messages[0].parts[0].text;
            if let Some(rest) = text.strip_prefix("Which is larger, ") {
                let (a, b) = rest.trim_end_matches('?').split_once(" or ").unwrap();
                let (a, b): (u32, u32) = (a.parse().unwrap(), b.parse().unwrap());
                assert!(a != b);
                assert_eq!(q.answer, Some(a.max(b).to_string()));
                continue;
            }
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
        assert_ne!(p, arithmetic(3, "+-*>", 2));
        assert_eq!(p.len(), arithmetic(3, "+-*>", 2).len());
    }

    #[test]
    fn rewards_follow_the_answer_the_format_and_the_tool() {
        let s = Shaping {
            format: 0.1,
            tool: 0.3,
            closeness: 0.0,
        };
        let reply = |text: &str, tool: &[&str], finished: bool| Reply {
            text: text.into(),
            tool_outputs: tool.iter().map(|t| t.to_string()).collect(),
            finished,
        };
        let r = verify(&reply("7 + 5 = 12\n#### 12", &[], true), "12", s);
        assert!(r.correct && r.well_formed && !r.tool_right);
        assert!((r.reward - 1.1).abs() < 1e-12);
        // Right number but cut off: no format reward.
        let r = verify(&reply("#### 12.0", &[], false), "12", s);
        assert!(r.correct && !r.well_formed && r.reward == 1.0);
        // Wrong number, good format, the calculator got it right.
        let r = verify(&reply("#### 13", &["12"], true), "12", s);
        assert!(!r.correct && r.well_formed && r.tool_right);
        assert!((r.reward - 0.4).abs() < 1e-12);
        // Near misses earn a graded share: 15 for 20 is off by a quarter.
        let g = Shaping {
            closeness: 0.4,
            ..s
        };
        let r = verify(&reply("#### 15", &[], false), "20", g);
        assert!((r.reward - 0.4 * 0.75).abs() < 1e-12);
        let r = verify(&reply("#### 20", &[], false), "20", g);
        assert_eq!(r.reward, 1.0);
        let r = verify(&reply("#### 90", &[], false), "20", g);
        assert_eq!(r.reward, 0.0);
        // No answer line at all; a number the calculator printed is not an answer.
        assert_eq!(
            verify(&reply("twelve", &["7"], true), "12", s),
            Scored::default()
        );
    }
}
