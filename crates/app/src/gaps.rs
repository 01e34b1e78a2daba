//! What a run went without: data a stage needed and could not get (a source its registry no
//! longer serves, a benchmark file that is missing). A stage carries on without it where it
//! can, so the gap must not live only in a scrolled-away warning: it is kept in the run
//! directory (`data-gaps.json`), printed in the speedrun's summary and shown in the report.

use base::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

const FILE: &str = "data-gaps.json";

/// One thing a stage did without.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    /// The stage that needed it ("sft", "eval").
    pub stage: String,
    /// What was missing: a source's name and path, or an evaluation task.
    pub what: String,
    /// What the stage did instead ("left out of the SFT mixture", "not scored: …").
    pub consequence: String,
}

/// The run's gaps, oldest first (none if the file is absent).
pub fn read(run: &Path) -> Result<Vec<Gap>> {
    let path = run.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            Error::input(
                path.display().to_string(),
                format!("is not a list of data gaps: {e}"),
                "delete it; the next speedrun writes it again",
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Records `gap`, replacing an earlier one of the same stage and `what` (a stage run again
/// reports afresh); with `None` as the consequence, the stage has it now and the gap goes.
pub fn record(run: &Path, stage: &str, what: &str, consequence: Option<&str>) -> Result<()> {
    let mut gaps = read(run)?;
    let before = gaps.clone();
    gaps.retain(|g| !(g.stage == stage && g.what == what));
    if let Some(c) = consequence {
        gaps.push(Gap {
            stage: stage.into(),
            what: what.into(),
            consequence: c.into(),
        });
    }
    if gaps == before {
        return Ok(());
    }
    let text = serde_json::to_string_pretty(&gaps).expect("gaps serialize");
    base::fs::write_atomic(&run.join(FILE), text.as_bytes())
}

/// A markdown list of the gaps, or None when there are none.
pub fn markdown(gaps: &[Gap]) -> Option<String> {
    if gaps.is_empty() {
        return None;
    }
    let mut o = String::from(
        "This run went without data its stages needed; the figures below are what it made without them.\n\n",
    );
    for g in gaps {
        o.push_str(&format!(
            "- **{}**: {} — {}\n",
            g.stage, g.what, g.consequence
        ));
    }
    Some(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_kept_replaced_and_cleared_by_stage_and_name() {
        let run = std::env::temp_dir().join(format!("frugal-gaps-{}", std::process::id()));
        std::fs::create_dir_all(&run).unwrap();
        assert_eq!(read(&run).unwrap(), vec![]);
        assert_eq!(markdown(&[]), None);
        record(&run, "sft", "bigbench", Some("left out")).unwrap();
        record(&run, "eval", "bbh_navigate", Some("not scored")).unwrap();
        record(&run, "sft", "bigbench", Some("left out of the mixture")).unwrap();
        let gaps = read(&run).unwrap();
        assert_eq!(gaps.len(), 2);
        assert_eq!(gaps[1].consequence, "left out of the mixture");
        let md = markdown(&gaps).unwrap();
        assert!(md.contains("**eval**: bbh_navigate — not scored"), "{md}");
        record(&run, "eval", "bbh_navigate", None).unwrap();
        assert_eq!(read(&run).unwrap().len(), 1);
        std::fs::write(run.join(FILE), "{").unwrap();
        assert!(read(&run)
            .unwrap_err()
            .to_string()
            .contains("data-gaps.json"));
        std::fs::remove_dir_all(&run).ok();
    }
}
