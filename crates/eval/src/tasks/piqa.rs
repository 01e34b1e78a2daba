//! PIQA (Bisk et al. 2020): which of two solutions achieves a physical goal. acc_norm.

use super::{hf, qa, spaced};
use crate::docs::{gold, parse, read};
use crate::{Items, Loaded, McItem, Metric, Sources, Task};
use base::Result;

pub struct Piqa;

impl Task for Piqa {
    fn name(&self) -> &'static str {
        "piqa"
    }
    fn source(&self) -> &'static str {
        "PIQA validation"
    }
    fn metric(&self) -> Metric {
        Metric::AccNorm
    }
    fn load(&self, src: &Sources) -> Result<Loaded> {
        let path = src.file(&hf("piqa/plain_text/validation"), "eval")?;
        let (items, skipped) = parse(&path, &read(&path)?, |r| {
            let sols = [r.str("sol1")?, r.str("sol2")?];
            let g = gold(r.index, r.int("label")?, 2)?;
            Ok(McItem::shared(qa(r.str("goal")?), spaced(sols), g))
        });
        Ok(Loaded {
            items: Items::Mc(items),
            shots_from: None,
            skipped,
        })
    }
}
