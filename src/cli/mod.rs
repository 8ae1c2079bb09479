//! Command-line front ends (clap); `anyhow` lives only at this edge.

pub mod args;
pub mod bench;
pub mod doctor;
pub mod keys;
pub mod ops;
pub mod sim;
