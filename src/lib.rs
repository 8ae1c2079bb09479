//! rxmigrate: Xen save / restore / live migration, byte-compatible with Xen's
//! migration stream, with a hot-page aware pre-copy.
//!
//! Layers (top to bottom on save): `migrate` (xl's handshake), `save` /
//! `restore` (the engines), `precopy` (policies), `stream` (wire formats),
//! `x86` (PV page tables, vCPU layouts), `hv` (the hypervisor boundary).

pub mod bitmap;
pub mod cli;
pub mod hv;
pub mod stream;
pub mod x86;
