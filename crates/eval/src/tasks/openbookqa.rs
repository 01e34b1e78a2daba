//! OpenBookQA (Mihaylov et al. 2018): elementary science, the question stem continued by each
//! answer. acc_norm.

use super::{hf, key_index, spaced};
use crate::docs::{gold, parse, read};
use crate::{Items, Loaded, McItem, Metric, Sources, Task};
use base::Result;

pub struct OpenBookQa;

impl Task for OpenBookQa {
    fn name(&self) -> &'static str {
        "openbookqa"
    }
    fn source(&self) -> &'static str {
        "OpenBookQA validation"
    }
    fn metric(&self) -> Metric {
        Metric::AccNorm
    }
    fn load(&self, src: &Sources) -> Result<Loaded> {
        let path = src.file(&hf("openbookqa/main/validation"), "eval")?;
        let (items, skipped) = parse(&path, &read(&path)?, |r| {
            let labels = r.strs("choices.label")?;
            let g = key_index(r.index, &labels, r.str("answerKey")?)?;
            let choices = r.strs("choices.text")?;
            gold(r.index, g as i64, choices.len())?;
            Ok(McItem::shared(
                r.str("question_stem")?.to_string(),
                spaced(choices),
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
