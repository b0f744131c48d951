//! Partner tracking at the edge.
//!
//! The pure modules compile and test natively; the worker glue lives in
//! `worker_glue` and only builds for `wasm32`.

pub mod admin;
pub mod auth;
pub mod bot;
pub mod clickid;
pub mod cookie;
pub mod currency;
pub mod deal;
pub mod dest;
pub mod fields;
pub mod hash;
pub mod ids;
pub mod partner;
pub mod postback;
pub mod record;
pub mod routes;
pub mod statement;
pub mod time;

#[cfg(target_arch = "wasm32")]
mod worker_glue;
