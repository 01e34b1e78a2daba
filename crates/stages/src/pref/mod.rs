//! Learning from human preferences: preference data, the reward model, DPO and GRPO.

pub mod dpo;
pub mod grpo;
pub mod loss;
pub mod rewards;
pub mod rm;
mod stage;

pub use stage::PairEval;
