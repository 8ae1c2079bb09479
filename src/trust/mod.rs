//! What the receiver trusts. A stream (a save image or a migration) comes
//! from a peer the receiver may not control: its xl config is checked as
//! data before anything is built from it ([`check_config`]), domain names
//! are checked before any path is made from them ([`name`]), and a process
//! running as root executes, reads or appends to files only under the
//! ownership rules of [`files`]. See docs/SECURITY.md.

pub mod config;
pub mod devices;
pub mod files;
pub mod name;
pub mod paths;

pub use config::{check_config, ConfigRefused};
pub use name::{check_domain_name, NameError};
