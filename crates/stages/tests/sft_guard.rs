//! SFT on the one training loop gets pretraining's loss guard: a bad step is skipped, not fatal.
//! Alone in its test binary, as it sets the process's FRUGAL_FAULTS.

use stages::sft::sft;

mod common;
#[path = "common/sft.rs"]
mod sft_common;
use common::temp;
use sft_common::{pretrained, sft_config, sft_records};

#[test]
fn a_bad_sft_step_is_skipped_by_the_loss_guard_not_fatal() {
    let dir = temp("sft-guard");
    let run = pretrained(&dir, "");
    std::env::set_var(train::faults::VAR, "nan_steps = [2]");
    let cfg = sft_config(&dir, &[]);
    let mut log = Vec::new();
    let s = sft(&cfg, &run, false, |l| log.push(l.to_string())).unwrap();
    let log = log.join("\n");
    assert!(
        log.contains("sft step 2 | loss guard: loss is NaN; update skipped (1 in a row)"),
        "{log}"
    );
    assert_eq!(s.steps, 6);
    assert!(s.final_loss.is_finite() && s.val_loss.is_finite(), "{s:?}");
    let rs = sft_records(&run);
    assert!(rs
        .iter()
        .any(|r| r["step"] == 2 && r["skipped"].is_string()));
    // The skipped step did not update: five steps have a loss line.
    assert_eq!(rs.iter().filter(|r| r["loss"].is_number()).count(), 5);
    let _ = std::fs::remove_dir_all(&dir);
}
