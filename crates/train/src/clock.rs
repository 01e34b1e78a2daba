//! What every training loop (pretraining, SFT, reward model, DPO, GRPO) keeps the same way:
//! wall time carried across resumes, the steps on which periodic work falls, and the stage's
//! closing report.

use crate::checkpoint::TrainState;
use base::Result;
use std::path::Path;
use std::time::Instant;

/// Wall time of a run, earlier invocations (before a resume) included.
pub struct LoopClock {
    start: Instant,
    before: f64,
}

impl LoopClock {
    /// Starts counting now, on top of what `state` (fresh or resumed) already spent.
    pub fn start(state: &TrainState) -> Self {
        LoopClock {
            start: Instant::now(),
            before: state.elapsed_s,
        }
    }

    pub fn wall_s(&self) -> f64 {
        self.before + self.start.elapsed().as_secs_f64()
    }
}

/// Whether work done every `every` steps (0: never) falls on `step` of `steps`; the last step
/// always gets it, so a run ends evaluated and checkpointed.
pub fn due(step: usize, steps: usize, every: usize) -> bool {
    (every > 0 && step.is_multiple_of(every)) || step == steps
}

/// Writes a stage's summary as `dir/report.json`, atomically.
pub fn write_report(dir: &Path, summary: &impl serde::Serialize) -> Result<()> {
    let json = serde_json::to_vec_pretty(summary).expect("a summary serialises");
    base::fs::write_atomic(&dir.join("report.json"), &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_work_falls_on_multiples_and_the_last_step() {
        let on: Vec<usize> = (1..=10).filter(|&s| due(s, 10, 4)).collect();
        assert_eq!(on, [4, 8, 10]);
        let never: Vec<usize> = (1..=10).filter(|&s| due(s, 10, 0)).collect();
        assert_eq!(never, [10]);
    }
}
