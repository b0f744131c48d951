pub mod harness;
pub mod soak;
