//! Settlement for partner programs: attribution, one commission engine for
//! every partner model, an append-only ledger, statements, payouts and
//! invoices. See `docs/settlement.md`.
//!
//! The core ([`engine`], [`statement`], [`money`], [`config`]) is pure; the
//! store, the export client and the CLI move bytes in and out.

pub mod batch;
pub mod carry;
pub mod cell;
pub mod config;
pub mod direct;
pub mod emit;
pub mod engine;
pub mod erase;
pub mod error;
pub mod events;
pub mod evidence;
pub mod explain;
pub mod facts;
pub mod fraud;
pub mod fraud_sim;
pub mod import;
pub mod ledger;
pub mod ledger_blocks;
pub mod line;
pub mod mem;
pub mod migrate;
pub mod money;
pub mod nightly;
pub mod payout_files;
pub mod period;
pub mod pull;
pub mod report;
pub mod restate;
pub mod run;
pub mod sim;
pub mod statement;
pub mod store;
pub mod tasks;
pub mod timing;
pub mod words;
pub mod writeoff_back;

pub use error::{Error, Result};

pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
