//! Learning-rate schedules: linear warm-up, then constant, cosine, or warmup-stable-decay.

use crate::config::{Schedule, TrainConfig};

/// Multiplier of the peak learning rate at optimizer step `step` (0-based).
pub fn lr_scale(cfg: &TrainConfig, step: usize) -> f32 {
    if step < cfg.warmup_steps {
        return (step + 1) as f32 / cfg.warmup_steps as f32;
    }
    let floor = cfg.min_lr_frac;
    let span = (cfg.steps - cfg.warmup_steps).max(1) as f32;
    let progress = ((step - cfg.warmup_steps) as f32 / span).min(1.0);
    match cfg.schedule {
        Schedule::Constant => 1.0,
        Schedule::Cosine => {
            floor + (1.0 - floor) * 0.5 * (1.0 + (std::f32::consts::PI * progress).cos())
        }
        Schedule::Wsd => {
            let decay_start = 1.0 - cfg.decay_frac;
            if progress <= decay_start || cfg.decay_frac == 0.0 {
                1.0
            } else {
                1.0 - (1.0 - floor) * (progress - decay_start) / cfg.decay_frac
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    #[test]
    fn warmup_then_each_shape() {
        let mut t = Config::preset("tiny", &[]).unwrap().train;
        t.steps = 110;
        t.warmup_steps = 10;
        t.min_lr_frac = 0.1;
        t.schedule = Schedule::Cosine;
        assert_eq!(lr_scale(&t, 0), 0.1);
        assert_eq!(lr_scale(&t, 9), 1.0);
        assert!((lr_scale(&t, 10) - 1.0).abs() < 1e-6);
        assert!(
            (lr_scale(&t, 60) - 0.55).abs() < 1e-5,
            "halfway down the cosine"
        );
        assert!((lr_scale(&t, 110) - 0.1).abs() < 1e-6);
        t.schedule = Schedule::Wsd;
        t.decay_frac = 0.2;
        assert_eq!(lr_scale(&t, 89), 1.0);
        assert!(
            (lr_scale(&t, 100) - 0.55).abs() < 1e-5,
            "halfway through the decay"
        );
        assert!((lr_scale(&t, 110) - 0.1).abs() < 1e-6);
        t.schedule = Schedule::Constant;
        assert_eq!(lr_scale(&t, 100), 1.0);
    }
}
