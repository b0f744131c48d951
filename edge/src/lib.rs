//! Partner tracking at the edge.
//!
//! The pure modules compile and test natively; the worker glue lives in
//! `worker_glue` and only builds for `wasm32`.

pub mod currency;
pub mod record;
pub mod time;

#[cfg(target_arch = "wasm32")]
mod worker_glue;
