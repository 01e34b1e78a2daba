//! Faults the tests inject into a training loop: a NaN loss at chosen steps (the loss guard's
//! tests), a rank that dies or hangs (distributed training's). They come from the environment
//! variable `FRUGAL_FAULTS`, never from a config: a run directory records only what a real run
//! may ask for, and a resumed or copied run cannot inherit a test's sabotage.
//!
//! The variable holds TOML keys separated by `;`, e.g.
//! `FRUGAL_FAULTS='nan_steps = [6, 7]'` or `FRUGAL_FAULTS='rank = 1; step = 7; kill = "exit"'`.

use base::{Error, Result};
use serde::Deserialize;

pub const VAR: &str = "FRUGAL_FAULTS";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kill {
    /// Dies the way a crash does: by a signal, without a word to the other ranks.
    Exit,
    /// Stops answering, as a rank stuck in a driver would.
    Hang,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Steps (numbered as in the log, from 1) whose loss becomes NaN, once each: a data fault
    /// would not recur after a rollback moved past its batch.
    pub nan_steps: Vec<usize>,
    /// Rank `rank` dies or hangs as step `step` (from 1) begins.
    pub kill: Option<Kill>,
    pub rank: usize,
    pub step: usize,
}

impl Faults {
    /// The faults `FRUGAL_FAULTS` asks for; none when it is unset.
    pub fn from_env() -> Result<Self> {
        match std::env::var(VAR) {
            Ok(text) => Self::parse(&text),
            Err(_) => Ok(Faults::default()),
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        toml::from_str(&text.replace(';', "\n")).map_err(|e| {
            Error::config(
                VAR,
                e.message().to_string(),
                "write e.g. nan_steps = [3] or rank = 1; step = 7; kill = \"exit\"",
            )
        })
    }

    /// Whether step `step` (from 1) gets a NaN loss: the first time it is reached only.
    pub fn nan_loss(&mut self, step: usize) -> bool {
        match self.nan_steps.iter().position(|&s| s == step) {
            Some(i) => {
                self.nan_steps.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Fires the rank fault if it falls on `rank` as step `step` (from 0) begins.
    pub fn before_step(&self, rank: usize, step: usize) {
        let Some(kill) = self.kill else { return };
        if self.rank != rank || self.step != step + 1 {
            return;
        }
        eprintln!("rank {rank}: injected fault {kill:?} at step {}", step + 1);
        match kill {
            Kill::Exit => std::process::abort(),
            Kill::Hang => loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_from_the_variable_text() {
        let f = Faults::parse("nan_steps = [6, 7]").unwrap();
        assert_eq!(f.nan_steps, [6, 7]);
        let f = Faults::parse("rank = 1; step = 7; kill = \"hang\"").unwrap();
        assert_eq!((f.rank, f.step, f.kill), (1, 7, Some(Kill::Hang)));
        let e = Faults::parse("nan_step = [1]").unwrap_err().to_string();
        assert!(e.contains(VAR) && e.contains("nan_step"), "{e}");
        assert_eq!(Faults::parse("").unwrap(), Faults::default());
        // Each NaN fires once: a rollback that returns to the step trains it.
        let mut f = Faults::parse("nan_steps = [3]").unwrap();
        assert_eq!(
            (f.nan_loss(2), f.nan_loss(3), f.nan_loss(3)),
            (false, true, false)
        );
    }
}
