//! CommonsenseQA (Talmor et al. 2019): five-way questions about everyday concepts.

use super::{hf, key_index, qa, spaced};
use crate::docs::{gold, parse, read};
use crate::{Items, Loaded, McItem, Metric, Sources, Task};
use base::Result;

pub struct CommonsenseQa;

impl Task for CommonsenseQa {
    fn name(&self) -> &'static str {
        "commonsense_qa"
    }
    fn source(&self) -> &'static str {
        "CommonsenseQA validation"
    }
    fn metric(&self) -> Metric {
        Metric::AccNorm
    }
    fn load(&self, src: &Sources) -> Result<Loaded> {
        let path = src.file(&hf("tau/commonsense_qa/none/validation"), "eval")?;
        let (items, skipped) = parse(&path, &read(&path)?, |r| {
            let labels = r.strs("choices.label")?;
            let g = key_index(r.index, &labels, r.str("answerKey")?)?;
            let choices = r.strs("choices.text")?;
            gold(r.index, g as i64, choices.len())?;
            Ok(McItem::shared(qa(r.str("question")?), spaced(choices), g))
        });
        Ok(Loaded {
            items: Items::Mc(items),
            shots_from: None,
            skipped,
        })
    }
}
