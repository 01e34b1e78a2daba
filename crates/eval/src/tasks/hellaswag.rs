//! HellaSwag (Zellers et al. 2019): pick the ending of an ActivityNet or WikiHow scene. Scored
//! by acc_norm, as lm-evaluation-harness and the GPT-3 paper report it.

use super::{hf, spaced};
use crate::docs::{gold, parse, read};
use crate::{Items, Loaded, McItem, Metric, Sources, Task};
use base::Result;

pub struct HellaSwag;

/// lm-evaluation-harness's clean-up of WikiHow markup: "[title]" becomes a sentence break,
/// other bracketed tags go, double spaces close up.
pub fn preprocess(text: &str) -> String {
    let text = text.trim().replace(" [title]", ". ");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(open) = rest.find('[') {
        match rest[open..].find(']') {
            Some(close) => {
                out.push_str(&rest[..open]);
                rest = &rest[open + close + 1..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out.replace("  ", " ")
}

/// Python's str.capitalize: the first character upper-case, the rest lower-case.
pub fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f
            .to_uppercase()
            .chain(c.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

impl Task for HellaSwag {
    fn name(&self) -> &'static str {
        "hellaswag"
    }
    fn source(&self) -> &'static str {
        "HellaSwag validation"
    }
    fn metric(&self) -> Metric {
        Metric::AccNorm
    }
    fn load(&self, src: &Sources) -> Result<Loaded> {
        let path = src.file(&hf("hellaswag/none/validation"), "eval")?;
        let rows = read(&path)?;
        let (items, skipped) = parse(&path, &rows, |r| {
            let ctx = format!("{} {}", r.str("ctx_a")?, capitalize(r.str("ctx_b")?));
            let query = preprocess(&format!("{}: {ctx}", r.str("activity_label")?));
            let endings = r.strs("endings")?;
            let g = gold(r.index, r.int("label")?, endings.len())?;
            Ok(McItem::shared(
                query,
                spaced(endings.iter().map(|e| preprocess(e))),
                g,
            ))
        });
        Ok(Loaded {
            items: Items::Mc(items),
            shots_from: None,
            skipped,
        })
    }
}
