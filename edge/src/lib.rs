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
pub mod erase;
pub mod fields;
pub mod hash;
pub mod ids;
pub mod integration;
pub mod partner;
pub mod postback;
pub mod record;
pub mod routes;
pub mod shopify;
pub mod statement;
pub mod stripe;
pub mod time;
pub mod webhook;

#[cfg(target_arch = "wasm32")]
mod worker_glue;
