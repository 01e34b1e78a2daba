//! BIG-bench multiple-choice tasks (Srivastava et al. 2022), read from their task.json: the
//! task prefix, the input after its prefix ("\nQ: " by default), and each choice of
//! `target_scores` as a continuation after the output prefix ("\nA: "). The choice scored 1 is
//! right.

use crate::docs::{parse, read};
use crate::{Items, Loaded, McItem, Metric, Sources, Task};
use base::Result;

pub struct BigBench {
    name: &'static str,
    source: &'static str,
    dir: &'static str,
}

impl BigBench {
    pub const NAVIGATE: BigBench = BigBench {
        name: "bbh_navigate",
        source: "BIG-bench navigate",
        dir: "navigate",
    };
    pub const SPORTS: BigBench = BigBench {
        name: "bbh_sports",
        source: "BIG-bench sports_understanding",
        dir: "sports_understanding",
    };
    pub const CAUSAL: BigBench = BigBench {
        name: "bbh_causal_judgment",
        source: "BIG-bench causal_judgment",
        dir: "causal_judgment",
    };
    pub const DATES: BigBench = BigBench {
        name: "bbh_date_understanding",
        source: "BIG-bench date_understanding",
        dir: "date_understanding",
    };
}

impl Task for BigBench {
    fn name(&self) -> &'static str {
        self.name
    }
    fn source(&self) -> &'static str {
        self.source
    }
    fn metric(&self) -> Metric {
        Metric::Acc
    }
    fn load(&self, src: &Sources) -> Result<Loaded> {
        let path = src.file(&format!("bigbench/{}/task.json", self.dir), "chat")?;
        let text = std::fs::read_to_string(&path).map_err(|e| base::Error::io(&path, e))?;
        let task: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let prefix = |k: &str, default: &str| task[k].as_str().unwrap_or(default).to_string();
        let task_prefix = prefix("task_prefix", "");
        let input_prefix = prefix("example_input_prefix", "\nQ: ");
        let output_prefix = prefix("example_output_prefix", "\nA: ");
        let (items, skipped) = parse(&path, &read(&path)?, |r| {
            let scores =
                r.v.get("target_scores")
                    .and_then(|s| s.as_object())
                    .ok_or_else(|| format!("row {}: no \"target_scores\" object", r.index))?;
            let choices: Vec<String> = scores.keys().cloned().collect();
            let g = scores
                .values()
                .position(|s| s.as_f64() == Some(1.0))
                .ok_or_else(|| format!("row {}: no choice scores 1", r.index))?;
            let context = format!(
                "{}{input_prefix}{}{}",
                task_prefix.trim_start(),
                r.str("input")?,
                output_prefix.trim_end()
            );
            Ok(McItem::shared(
                context.trim_start().to_string(),
                choices.iter().map(|c| format!(" {c}")).collect(),
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
