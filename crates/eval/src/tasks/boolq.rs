//! BoolQ (Clark et al. 2019): a yes/no question about a Wikipedia passage.

use super::hf;
use crate::docs::{parse, read};
use crate::{Items, Loaded, McItem, Metric, Sources, Task};
use base::Result;

pub struct BoolQ;

impl Task for BoolQ {
    fn name(&self) -> &'static str {
        "boolq"
    }
    fn source(&self) -> &'static str {
        "BoolQ validation"
    }
    fn metric(&self) -> Metric {
        Metric::Acc
    }
    fn load(&self, src: &Sources) -> Result<Loaded> {
        let path = src.file(&hf("boolq/none/validation"), "eval")?;
        let (items, skipped) = parse(&path, &read(&path)?, |r| {
            let context = format!(
                "{}\nQuestion: {}?\nAnswer:",
                r.str("passage")?,
                r.str("question")?
            );
            let g = usize::from(r.bool("answer")?);
            Ok(McItem::shared(
                context,
                vec![" no".into(), " yes".into()],
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
