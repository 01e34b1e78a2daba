//! The Llama-style decoder: parameters (`params`), activation buffers (`workspace`), the explicit
//! forward and backward passes (`llama`), and weights in safetensors (`weights`).

mod llama;
mod moe;
mod params;
mod weights;
mod workspace;

pub use llama::Llama;
pub use moe::load_imbalance;
pub use params::{LayerOffsets, MoeOffsets, ParamSpec, Params};
pub use weights::{load_flat, load_safetensors, save_flat, save_safetensors};
pub(crate) use workspace::MoeActs;
pub use workspace::Workspace;
