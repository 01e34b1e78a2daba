//! Learning from human preferences: preference data, the reward model, DPO and GRPO.

pub mod data;
pub mod dpo;
pub mod loss;
