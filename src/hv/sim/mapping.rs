//! `SimMapping`: a batch of a simulated guest's frames, as `map_pages` gives
//! them (the simulated `xenforeignmemory_map`).

use super::dom::Dom;
use crate::hv::{GuestPage, GuestPageMut, PageMapping};
use std::sync::Arc;

/// A batch of guest frames mapped into this process.
pub(super) struct SimMapping {
    pub(super) dom: Arc<Dom>,
    /// Frame indices, checked against the domain's RAM.
    pub(super) frames: Vec<usize>,
    pub(super) writable: bool,
}

impl PageMapping for SimMapping {
    fn len(&self) -> usize {
        self.frames.len()
    }
    fn page(&self, i: usize) -> GuestPage<'_> {
        let f = self.frames[i];
        // SAFETY: frame indices were checked against the RAM size when the
        // mapping was made, the RAM is page aligned and stays mapped while
        // `dom` is held (as long as `self`). The guest may write the page
        // concurrently, as on Xen: GuestPage only copies, volatile.
        unsafe { GuestPage::new(self.dom.ram.as_ptr().add(f * 4096)) }
    }
    fn page_mut(&mut self, i: usize) -> GuestPageMut<'_> {
        assert!(self.writable, "page_mut on a read-only mapping");
        let f = self.frames[i];
        // SAFETY: as in `page`; the RAM is mapped read-write.
        unsafe { GuestPageMut::new(self.dom.ram.as_ptr().add(f * 4096)) }
    }
}
