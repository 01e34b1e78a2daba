//! The Llama-style decoder: parameters (`params`), activation buffers (`workspace`), the explicit
//! forward and backward passes of the model (`llama`) and of one block (`block`), the routed
//! experts of a mixture-of-experts MLP (`moe`), latent attention's projections (`mla`), multi-token prediction modules (`mtp`), and
//! weights in safetensors (`weights`).

mod block;
mod llama;
mod mla;
mod moe;
mod mtp;
mod params;
mod weights;
mod workspace;

pub use llama::Llama;
pub use moe::load_imbalance;
pub use params::{LayerOffsets, MlaOffsets, MoeOffsets, MtpOffsets, ParamSpec, Params};
pub use weights::{load_flat, load_safetensors, save_flat, save_safetensors};
pub(crate) use workspace::MoeActs;
pub use workspace::Workspace;
