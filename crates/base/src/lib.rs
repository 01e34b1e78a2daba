//! The bottom of frugal's library stack: what every layer above needs and none of them owns.
//!
//! Owns: the typed [`Error`] (each names the file, field or tensor at fault and ends with a
//! HINT), the one config loading path ([`config`]: TOML plus `--set` overrides, then each
//! config's `Validate`), files written
//! atomically and listed reproducibly ([`fs`]), progress bars ([`progress`]) and the median of
//! timings ([`stats`]). Uses nothing of frugal. Exposes exactly those modules.

pub mod config;
pub mod error;
pub mod fs;
pub mod progress;
pub mod stats;

pub use error::{Error, Result};
