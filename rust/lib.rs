//! lowfp core: exact low-precision number formats, rounding, reproducible stochastic
//! rounding, k-bit packing and blockwise quantization.
//!
//! The core knows nothing about Python: the PyO3 binding lives in `py.rs` behind the
//! `python` feature, and `cargo test` runs without it.

pub mod block;
pub mod dynamic;
pub mod error;
pub mod exmy;
pub mod format;
pub mod formats;
#[doc(hidden)]
pub mod fuzz;
pub mod linear;
pub mod logfmt;
pub mod optim;
pub mod pack;
pub mod par;
pub mod rng;
mod simd;
pub mod table;

#[cfg(feature = "python")]
mod py;

pub use error::{Error, Result};
pub use format::{Format, NanKind};
