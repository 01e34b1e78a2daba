//! The training stages, each an `Objective` on `train`'s one loop (`train::Trainer`).
//!
//! Owns: pretraining, next-token prediction on token shards (`pretrain`, with text samples from
//! `sample`); instruction tuning on the chat mixture (`sft`); and learning from preferences
//! (`pref`): the reward model, DPO and GRPO with their losses and rewards.
//!
//! Uses: `train` (the loop, config, checkpoints, collectives), `engine` (samples and
//! GRPO's rollouts), `model`, `data`, `ledger`, `base`. Exposes: one module per stage, each
//! with its config and entry point.

pub mod pref;
pub mod pretrain;
pub mod sample;
pub mod sft;
