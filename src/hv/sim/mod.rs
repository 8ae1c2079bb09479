//! The simulated Xen host: the embedded default wherever there is no Xen.
//!
//! Not a mock. A host is a state directory; each domain is a real process
//! (`rxmigrate sim-guest`) running a deterministic workload over RAM that is
//! a shared-memory file the toolstack maps too, so a live migration meets
//! the same races it meets on Xen. Log-dirty is write tracking by the kernel
//! (userfaultfd async write-protect read with PAGEMAP_SCAN), or a software
//! dirty bitmap where the kernel lacks it. PV guests have real 4-level page
//! tables in a machine-frame space distinct from their pfn space; HVM guests
//! have an HVM context and params. See docs/ARCHITECTURE.md, "The simulated host".
//!
//! Module map: `config` (what a guest is), `layout` (where things live in
//! pfn space), `workload` (the step function), `build` (a fresh guest),
//! `machine` (how a guest boots from its context and runs), `guest` (the
//! guest process), `host` (`SimHost`, the `Hypervisor` impl), `toolstack` (its `Toolstack`
//! impl: xenstore, grant table, device model), `oracle`
//! (the reference run and comparison), `ctl`/`meta`/`shm` (shared state),
//! `uffd` (kernel write tracking), `trace` (recorded
//! page-write traces and their replay), `hvmctx`, `cpu` (fixed CPU facts).

pub mod build;
pub mod config;
pub mod cpu;
mod create;
pub mod ctl;
pub mod dom;
pub mod guest;
pub mod host;
pub mod hvmctx;
pub mod layout;
pub mod machine;
mod mapping;
pub mod meta;
pub mod oracle;
mod process;
mod pv;
pub mod shm;
pub mod toolstack;
pub mod trace;
mod tracking;
pub mod uffd;
pub mod workload;

pub use config::{
    parse_workload, GuestConfig, TraceSpec, TrackingMode, WorkloadKind, WorkloadParams,
};
pub use host::{default_dir, new_memory, SimHost};
pub use oracle::{check, compare, written_between, CheckReport, Reference};
pub use process::own_start_time;
pub use toolstack::{GrantEntry, ToolstackState};
pub use tracking::probe_tracking;
