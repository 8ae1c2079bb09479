//! Xen's migration stream formats (to be filled in by the stream issue).

mod types;
pub use types::{PageType, TscInfo};
