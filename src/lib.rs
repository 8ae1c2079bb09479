//! rxmigrate: Xen save / restore / live migration, byte-compatible with Xen's
//! migration stream, with a hot-page aware pre-copy.
//!
//! Layers (top to bottom on save): `migrate` (whole operations, xl's
//! handshake), `save` / `restore` (the engines), `precopy` (policies),
//! `image` and `stream` (wire formats), `x86` (PV page tables, vCPU layouts),
//! `hv` (the hypervisor boundary).
//!
//! Features: `sim` (the simulated host), `bench` and `cli` (the `rxmigrate`
//! command) are on by default; the xl plugin, which runs as root, links the
//! engine alone (`default-features = false`).

#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(feature = "bench")]
pub mod bench;
pub mod bitmap;
pub mod cancel;
#[cfg(feature = "cli")]
pub mod cli;
pub mod doctor;
pub mod helper_settings;
pub mod hv;
pub mod image;
pub mod inspect;
pub mod migrate;
pub mod precopy;
pub mod restore;
pub mod save;
pub mod stats;
pub mod stream;
pub mod transport;
pub mod trust;
pub mod version;
pub mod x86;
