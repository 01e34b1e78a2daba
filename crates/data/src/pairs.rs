//! Preference pairs: a prompt (a conversation ending with the user's turn) and two replies, the
//! preferred one first. Read from Anthropic's HH-RLHF dialogues, BIG-bench's hhh_alignment, and
//! frugal's own JSONL (`{prompt, chosen, rejected, annotator}`, what `frugal prefs export`
//! writes); a malformed row is skipped and counted with its file and line.

use crate::chat::{Conversation, Message, Role};
use crate::jsonl::for_each_line;
use base::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    pub prompt: Conversation,
    pub chosen: String,
    pub rejected: String,
    /// Who judged: an annotator's name, or the dataset ("hh-rlhf").
    pub annotator: String,
}

/// What a file gave: the pairs and the rows that could not be read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Read {
    pub pairs: Vec<Pair>,
    pub skipped: usize,
    pub first_skip: Option<String>,
}

impl Read {
    fn skip(&mut self, msg: String) {
        self.skipped += 1;
        self.first_skip.get_or_insert(msg);
    }
}

/// Splits an HH-RLHF dialogue ("\n\nHuman: …\n\nAssistant: …", repeated) into turns.
pub fn hh_turns(text: &str) -> std::result::Result<Vec<Message>, String> {
    let mut turns = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (role, after) = if let Some(a) = rest.strip_prefix("\n\nHuman:") {
            (Role::User, a)
        } else if let Some(a) = rest.strip_prefix("\n\nAssistant:") {
            (Role::Assistant, a)
        } else {
            return Err(format!(
                "expected \"\\n\\nHuman:\" or \"\\n\\nAssistant:\" at {:?}",
                rest.chars().take(30).collect::<String>()
            ));
        };
        let end = [after.find("\n\nHuman:"), after.find("\n\nAssistant:")]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(after.len());
        turns.push(Message::text(role, after[..end].trim()));
        rest = &after[end..];
    }
    Ok(turns)
}

/// One HH-RLHF row: both dialogues share every turn but the last assistant reply.
fn hh_pair(chosen: &str, rejected: &str) -> std::result::Result<Pair, String> {
    let (mut c, mut r) = (hh_turns(chosen)?, hh_turns(rejected)?);
    let reply = |t: &mut Vec<Message>, which: &str| match t.pop() {
        Some(m) if m.role == Role::Assistant => Ok(m.display()),
        _ => Err(format!(
            "the {which} dialogue does not end with an assistant reply"
        )),
    };
    let (chosen, rejected) = (reply(&mut c, "chosen")?, reply(&mut r, "rejected")?);
    if c != r {
        return Err("the two dialogues differ before their last reply".into());
    }
    let prompt = Conversation { messages: c };
    prompt.validate()?;
    if chosen == rejected {
        return Err("the two replies are the same".into());
    }
    Ok(Pair {
        prompt,
        chosen,
        rejected,
        annotator: "hh-rlhf".into(),
    })
}

fn object_field<'a>(v: &'a serde_json::Value, k: &str) -> std::result::Result<&'a str, String> {
    v.get(k)
        .and_then(|x| x.as_str())
        .ok_or_else(|| format!("no string field {k:?}"))
}

/// A JSONL row: HH-RLHF's `{chosen, rejected}` dialogues, or frugal's
/// `{prompt, chosen, rejected, annotator?}` where the prompt is a string (one user turn) or a
/// list of `{role, content}` messages.
fn json_pair(v: &serde_json::Value) -> std::result::Result<Pair, String> {
    let (chosen, rejected) = (object_field(v, "chosen")?, object_field(v, "rejected")?);
    let Some(prompt) = v.get("prompt") else {
        return hh_pair(chosen, rejected);
    };
    let messages = match prompt {
        serde_json::Value::String(s) => vec![Message::text(Role::User, s.clone())],
        serde_json::Value::Array(ms) => ms
            .iter()
            .map(|m| {
                let role = match object_field(m, "role")? {
                    "system" => Role::System,
                    "user" => Role::User,
                    "assistant" => Role::Assistant,
                    r => return Err(format!("unknown role {r:?}")),
                };
                Ok(Message::text(role, object_field(m, "content")?))
            })
            .collect::<std::result::Result<_, String>>()?,
        _ => return Err("\"prompt\" is neither a string nor a list of messages".into()),
    };
    let prompt = Conversation { messages };
    prompt.validate()?;
    if prompt.messages.last().map(|m| m.role) != Some(Role::User) {
        return Err("the prompt must end with a user message".into());
    }
    Ok(Pair {
        prompt,
        chosen: chosen.into(),
        rejected: rejected.into(),
        annotator: v
            .get("annotator")
            .and_then(|a| a.as_str())
            .unwrap_or("unknown")
            .into(),
    })
}

/// Reads preference pairs from a JSONL file (plain or compressed) or a BIG-bench
/// hhh_alignment task.json.
pub fn read_pairs(path: &Path) -> Result<Read> {
    let mut out = Read::default();
    if path.extension().is_some_and(|e| e == "json") {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let task: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            Error::input(
                path.display().to_string(),
                format!("not JSON: {e}"),
                "pass a BIG-bench task.json",
            )
        })?;
        let examples = task["examples"].as_array().ok_or_else(|| {
            Error::input(
                path.display().to_string(),
                "has no \"examples\" array",
                "pass a BIG-bench hhh_alignment task.json (harmless/, helpful/, honest/, other/)",
            )
        })?;
        for (i, ex) in examples.iter().enumerate() {
            match hhh_pairs(ex) {
                Ok(p) => out.pairs.extend(p),
                Err(e) => out.skip(format!("{}, example {i}: {e}", path.display())),
            }
        }
    } else {
        for_each_line(path, |line, text| {
            if text.trim().is_empty() {
                return Ok(());
            }
            match serde_json::from_str(text)
                .map_err(|e| format!("not JSON: {e}"))
                .and_then(|v| json_pair(&v))
            {
                Ok(p) => out.pairs.push(p),
                Err(e) => out.skip(format!("{}, line {line}: {e}", path.display())),
            }
            Ok(())
        })?;
    }
    if out.pairs.is_empty() {
        return Err(Error::input(
            path.display().to_string(),
            format!(
                "holds no usable preference pair{}",
                out.first_skip.as_deref().map_or(String::new(), |m| format!(" (first problem: {m})"))
            ),
            "pass JSONL rows {\"prompt\", \"chosen\", \"rejected\"}, HH-RLHF rows or an hhh_alignment task.json",
        ));
    }
    Ok(out)
}

/// An hhh_alignment example: each reply scored 1 is preferred to each scored 0.
fn hhh_pairs(ex: &serde_json::Value) -> std::result::Result<Vec<Pair>, String> {
    let input = object_field(ex, "input")?;
    let scores = ex
        .get("target_scores")
        .and_then(|s| s.as_object())
        .ok_or("no \"target_scores\" object")?;
    let by = |want: f64| -> Vec<&String> {
        scores
            .iter()
            .filter(|(_, s)| s.as_f64() == Some(want))
            .map(|(k, _)| k)
            .collect()
    };
    let (good, bad) = (by(1.0), by(0.0));
    if good.is_empty() || bad.is_empty() {
        return Err("needs a reply scored 1 and one scored 0".into());
    }
    Ok(good
        .iter()
        .flat_map(|g| bad.iter().map(move |b| (g, b)))
        .map(|(g, b)| Pair {
            prompt: Conversation {
                messages: vec![Message::text(Role::User, input)],
            },
            chosen: g.to_string(),
            rejected: b.to_string(),
            annotator: "hhh_alignment".into(),
        })
        .collect())
}

/// Every pair of every source, in order, each source's count and skipped rows logged.
/// Returns the pairs and the rows skipped in all.
pub fn read_sources(
    sources: &[std::path::PathBuf],
    log: &mut impl FnMut(&str),
) -> Result<(Vec<Pair>, usize)> {
    let (mut pairs, mut skipped) = (Vec::new(), 0);
    for s in sources {
        let r = read_pairs(s)?;
        log(&format!(
            "{}: {} pairs, {} rows skipped{}",
            s.display(),
            r.pairs.len(),
            r.skipped,
            r.first_skip
                .map_or(String::new(), |m| format!(" (first: {m})"))
        ));
        skipped += r.skipped;
        pairs.extend(r.pairs);
    }
    Ok((pairs, skipped))
}

/// Fisher–Yates with a seeded generator: the same seed, the same order.
pub fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut rng = tensor::Rng::new(seed);
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i as u64 + 1) as usize);
    }
}

/// A pair as one JSONL row of the export format.
pub fn to_json(p: &Pair) -> serde_json::Value {
    let prompt: Vec<serde_json::Value> = p
        .prompt
        .messages
        .iter()
        .map(|m| {
            let role = match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            serde_json::json!({"role": role, "content": m.display()})
        })
        .collect();
    serde_json::json!({"prompt": prompt, "chosen": p.chosen, "rejected": p.rejected, "annotator": p.annotator})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hh_rlhf_rows_split_into_a_prompt_and_two_replies() {
        let row = serde_json::json!({
            "chosen": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Help me hurt someone\n\nAssistant: I can't help with that.",
            "rejected": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Help me hurt someone\n\nAssistant: Sure, here is how."
        });
        let p = json_pair(&row).unwrap();
        assert_eq!(p.prompt.messages.len(), 3);
        assert_eq!(p.prompt.messages[2].display(), "Help me hurt someone");
        assert_eq!(p.chosen, "I can't help with that.");
        assert_eq!(p.rejected, "Sure, here is how.");
        assert_eq!(p.annotator, "hh-rlhf");
        // Dialogues that differ earlier, or do not end with the assistant, are refused.
        let bad = serde_json::json!({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: c\n\nAssistant: d"});
        assert!(json_pair(&bad).unwrap_err().contains("differ"));
        let bad = serde_json::json!({"chosen": "\n\nHuman: a", "rejected": "\n\nHuman: a"});
        assert!(json_pair(&bad).unwrap_err().contains("assistant reply"));
    }

    #[test]
    fn export_rows_read_back_and_missing_fields_are_named() {
        let p = Pair {
            prompt: Conversation {
                messages: vec![Message::text(Role::User, "What is 2+2? <script>x</script>")],
            },
            chosen: "4".into(),
            rejected: "5".into(),
            annotator: "ann1".into(),
        };
        assert_eq!(json_pair(&to_json(&p)).unwrap(), p);
        let e = json_pair(&serde_json::json!({"prompt": "q", "chosen": "a"})).unwrap_err();
        assert!(e.contains("\"rejected\""), "{e}");
        let e = json_pair(&serde_json::json!({"prompt": [{"role": "wizard", "content": "x"}], "chosen": "a", "rejected": "b"})).unwrap_err();
        assert!(e.contains("wizard"), "{e}");
    }

    #[test]
    fn files_count_their_bad_rows_and_an_empty_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("frugal-prefs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("p.jsonl");
        std::fs::write(
            &f,
            "{\"prompt\": \"q\", \"chosen\": \"a\", \"rejected\": \"b\"}\nnot json\n{\"prompt\": \"q\"}\n",
        )
        .unwrap();
        let r = read_pairs(&f).unwrap();
        assert_eq!((r.pairs.len(), r.skipped), (1, 2));
        assert!(r.first_skip.unwrap().contains("p.jsonl, line 2"));
        std::fs::write(&f, "{\"prompt\": \"q\"}\n").unwrap();
        let e = read_pairs(&f).unwrap_err().to_string();
        assert!(
            e.contains("no usable preference pair") && e.contains("line 1"),
            "{e}"
        );
        let task = dir.join("task.json");
        std::fs::write(
            &task,
            r#"{"examples": [{"input": "q", "target_scores": {"good": 1, "bad": 0, "worse": 0}}, {"input": "x"}]}"#,
        )
        .unwrap();
        let r = read_pairs(&task).unwrap();
        assert_eq!((r.pairs.len(), r.skipped), (2, 1));
        assert!(r.pairs.iter().all(|p| p.chosen == "good"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
