//! WinoGrande (Sakaguchi et al. 2019): fill the blank with one of two names. Partial scoring,
//! as lm-evaluation-harness does it: the context is the sentence up to the blank with each
//! option filled in, the continuation is the rest of the sentence, the same for both.

use super::hf;
use crate::docs::{gold, parse, read};
use crate::{Items, Loaded, McItem, Metric, Sources, Task};
use base::Result;

pub struct WinoGrande;

impl Task for WinoGrande {
    fn name(&self) -> &'static str {
        "winogrande"
    }
    fn source(&self) -> &'static str {
        "WinoGrande (xl) validation"
    }
    fn metric(&self) -> Metric {
        Metric::Acc
    }
    fn load(&self, src: &Sources) -> Result<Loaded> {
        let path = src.file(&hf("winogrande/winogrande_xl/validation"), "eval")?;
        let (items, skipped) = parse(&path, &read(&path)?, |r| {
            let sentence = r.str("sentence")?;
            let blank = sentence
                .find('_')
                .ok_or_else(|| format!("row {}: the sentence has no blank '_'", r.index))?;
            let rest = format!(" {}", sentence[blank + 1..].trim());
            let options = [r.str("option1")?, r.str("option2")?];
            let g = gold(r.index, r.int("answer")? - 1, 2)?;
            Ok(McItem {
                preamble: String::new(),
                choices: options
                    .iter()
                    .map(|o| (format!("{}{o}", &sentence[..blank]), rest.clone()))
                    .collect(),
                gold: g,
                group: 0,
            })
        });
        Ok(Loaded {
            items: Items::Mc(items),
            shots_from: None,
            skipped,
        })
    }
}
