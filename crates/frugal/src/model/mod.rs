//! The Llama-style decoder: parameters (`params`), activation buffers (`workspace`), the explicit
//! forward and backward passes (`llama`), and weights in safetensors (`weights`).

mod llama;
mod params;
mod weights;
mod workspace;

pub use llama::Llama;
pub use params::{LayerOffsets, ParamSpec, Params};
pub use weights::{load_flat, load_safetensors, save_flat, save_safetensors};
pub use workspace::Workspace;
