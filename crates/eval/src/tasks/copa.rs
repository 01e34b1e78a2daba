//! COPA (Roemmele et al. 2011, in SuperGLUE): the cause or effect of a premise, joined by
//! "because" or "therefore", as lm-evaluation-harness writes it.

use super::hf;
use crate::docs::{gold, parse, read};
use crate::{Items, Loaded, McItem, Metric, Sources, Task};
use base::Result;

pub struct Copa;

/// The choice as the second half of a sentence: its first letter lower-cased.
fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

impl Task for Copa {
    fn name(&self) -> &'static str {
        "copa"
    }
    fn source(&self) -> &'static str {
        "COPA validation"
    }
    fn metric(&self) -> Metric {
        Metric::Acc
    }
    fn load(&self, src: &Sources) -> Result<Loaded> {
        let path = src.file(&hf("super_glue/copa/validation"), "eval")?;
        let (items, skipped) = parse(&path, &read(&path)?, |r| {
            let connector = match r.str("question")? {
                "cause" => "because",
                "effect" => "therefore",
                q => {
                    return Err(format!(
                        "row {}: question {q:?} is neither cause nor effect",
                        r.index
                    ))
                }
            };
            let premise = r.str("premise")?.trim();
            let premise = premise.strip_suffix('.').unwrap_or(premise);
            let choices = [r.str("choice1")?, r.str("choice2")?]
                .iter()
                .map(|c| format!(" {}", lower_first(c)))
                .collect();
            let g = gold(r.index, r.int("label")?, 2)?;
            Ok(McItem::shared(format!("{premise} {connector}"), choices, g))
        });
        Ok(Loaded {
            items: Items::Mc(items),
            shots_from: None,
            skipped,
        })
    }
}
