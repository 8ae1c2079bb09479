//! The open library handles and the small RAII helpers around them.

use super::errno::{last_errno, xc_error};
use crate::hv::{DomId, GuestPage, GuestPageMut, HvError, PageMapping, Result};
use std::ffi::{c_void, CString};
use std::sync::{Mutex, MutexGuard};
use xen_sys::{xc_hypercall_buffer_t, xc_interface, xenforeignmemory_handle, xs_handle, XenLibs};

/// libxenctrl, libxenforeignmemory and libxenstore handles of one process.
pub struct Handles {
    pub libs: XenLibs,
    xch: *mut xc_interface,
    fmem: *mut xenforeignmemory_handle,
    xsh: *mut xs_handle,
    /// An xc_interface may be used by one thread at a time (xenctrl.h).
    xc_lock: Mutex<()>,
}

// SAFETY: the raw handles are only used through `Handles`' methods; xc calls
// are serialised by `xc_lock`; libxenforeignmemory and libxenstore handles
// are safe to use from several threads (their own locking / plain ioctls).
unsafe impl Send for Handles {}
// SAFETY: as for Send.
unsafe impl Sync for Handles {}

impl Drop for Handles {
    fn drop(&mut self) {
        // SAFETY: the handles were opened by `open` and are closed once.
        unsafe {
            self.libs.store.xs_close(self.xsh);
            self.libs.fmem.xenforeignmemory_close(self.fmem);
            self.libs.ctrl.xc_interface_close(self.xch);
        }
    }
}

/// Locked access to libxenctrl.
pub struct Xc<'a> {
    pub lib: &'a xen_sys::xenctrl::XenCtrl,
    pub guest: &'a xen_sys::xenguest::XenGuest,
    /// The installed release's own functions (used through `release`).
    pub rel: &'a xen_sys::ReleaseLib,
    pub xch: *mut xc_interface,
    _g: MutexGuard<'a, ()>,
}

impl Handles {
    pub fn open(libs: XenLibs) -> Result<Handles> {
        // SAFETY: plain constructor calls; NULL loggers mean "log to stderr".
        let xch = unsafe {
            libs.ctrl
                .xc_interface_open(std::ptr::null_mut(), std::ptr::null_mut(), 0)
        };
        if xch.is_null() {
            return Err(HvError::Unavailable(format!(
                "xc_interface_open failed: {} (run as root in dom0)",
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: as above.
        let fmem = unsafe { libs.fmem.xenforeignmemory_open(std::ptr::null_mut(), 0) };
        if fmem.is_null() {
            let e = std::io::Error::last_os_error();
            // SAFETY: xch was opened above and is not used again.
            unsafe { libs.ctrl.xc_interface_close(xch) };
            return Err(HvError::Unavailable(format!(
                "xenforeignmemory_open failed: {e}"
            )));
        }
        // SAFETY: as above; flags 0 = the xenstored socket or the kernel device.
        let xsh = unsafe { libs.store.xs_open(0) };
        if xsh.is_null() {
            let e = std::io::Error::last_os_error();
            // SAFETY: both were opened above and are not used again.
            unsafe {
                libs.fmem.xenforeignmemory_close(fmem);
                libs.ctrl.xc_interface_close(xch);
            }
            return Err(HvError::Unavailable(format!(
                "xs_open failed: {e} (is xenstored running?)"
            )));
        }
        Ok(Handles {
            libs,
            xch,
            fmem,
            xsh,
            xc_lock: Mutex::new(()),
        })
    }

    pub fn xc(&self) -> Xc<'_> {
        Xc {
            lib: &self.libs.ctrl,
            guest: &self.libs.guest,
            rel: &self.libs.rel,
            xch: self.xch,
            _g: self.xc_lock.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Runs one libxenctrl call under the lock; a negative result becomes
    /// an error built from the errno it left.
    pub fn call(
        &self,
        dom: DomId,
        op: &'static str,
        f: impl FnOnce(&Xc<'_>) -> i64,
    ) -> Result<i64> {
        let xc = self.xc();
        let rc = f(&xc);
        if rc < 0 {
            let e = last_errno();
            drop(xc);
            return Err(xc_error(dom, op, e));
        }
        Ok(rc)
    }

    // --- xenstore -------------------------------------------------------

    pub fn xs_read(&self, path: &str) -> Option<String> {
        let p = CString::new(path).ok()?;
        let mut len = 0u32;
        // SAFETY: p is NUL-terminated; xs_read returns a malloc'd buffer of
        // `len` bytes (or NULL) that we free.
        unsafe {
            let v = self.libs.store.xs_read(self.xsh, 0, p.as_ptr(), &mut len);
            if v.is_null() {
                return None;
            }
            let s = std::slice::from_raw_parts(v as *const u8, len as usize);
            let out = String::from_utf8_lossy(s).into_owned();
            libc::free(v);
            Some(out)
        }
    }

    pub fn xs_write(&self, path: &str, value: &str) -> Result<()> {
        let p = cstr(path)?;
        // SAFETY: p is NUL-terminated, value is len bytes.
        let ok = unsafe {
            self.libs.store.xs_write(
                self.xsh,
                0,
                p.as_ptr(),
                value.as_ptr() as *const c_void,
                value.len() as u32,
            )
        };
        if !ok {
            return Err(HvError::io(
                format!("xenstore write {path}"),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// The children of a node (empty if it has none or does not exist).
    pub fn xs_directory(&self, path: &str) -> Vec<String> {
        let Ok(p) = CString::new(path) else {
            return Vec::new();
        };
        let mut n = 0u32;
        // SAFETY: p is NUL-terminated; the result is one malloc'd block of
        // n string pointers and their strings, freed once.
        unsafe {
            let v = self
                .libs
                .store
                .xs_directory(self.xsh, 0, p.as_ptr(), &mut n);
            if v.is_null() {
                return Vec::new();
            }
            let out = (0..n as usize)
                .map(|i| {
                    std::ffi::CStr::from_ptr(*v.add(i))
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
            libc::free(v as *mut c_void);
            out
        }
    }

    pub fn xs_rm(&self, path: &str) {
        if let Ok(p) = cstr(path) {
            // SAFETY: p is NUL-terminated. A missing node is not an error here.
            unsafe { self.libs.store.xs_rm(self.xsh, 0, p.as_ptr()) };
        }
    }

    /// Sets a node's permissions: the first entry is the owner (and what
    /// everybody else may do), the rest are per-domain grants.
    pub fn xs_set_perms(&self, path: &str, perms: &[(u32, u32)]) -> Result<()> {
        let p = cstr(path)?;
        let mut v: Vec<xen_sys::xs_permissions> = perms
            .iter()
            .map(|&(id, perms)| xen_sys::xs_permissions { id, perms })
            .collect();
        // SAFETY: p is NUL-terminated; v holds v.len() entries.
        let ok = unsafe {
            self.libs.store.xs_set_permissions(
                self.xsh,
                0,
                p.as_ptr(),
                v.as_mut_ptr(),
                v.len() as u32,
            )
        };
        if !ok {
            return Err(HvError::io(
                format!("xenstore set permissions of {path}"),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    pub fn xs_introduce(&self, dom: DomId, store_mfn: u64, store_evtchn: u32) -> Result<()> {
        // SAFETY: plain call with integer arguments.
        let ok = unsafe {
            self.libs
                .store
                .xs_introduce_domain(self.xsh, dom, store_mfn as _, store_evtchn)
        };
        if !ok {
            return Err(xc_error(dom, "xs_introduce_domain", last_errno()));
        }
        Ok(())
    }

    pub fn xs_resume(&self, dom: DomId) {
        // SAFETY: plain call; failure only means xenstored had no state to clear.
        unsafe { self.libs.store.xs_resume_domain(self.xsh, dom) };
    }

    // --- foreign memory -------------------------------------------------

    pub fn map(&self, dom: DomId, gfns: &[u64], writable: bool) -> Result<Mapping<'_>> {
        if gfns.is_empty() {
            return Ok(Mapping {
                h: self,
                ptr: std::ptr::null_mut(),
                n: 0,
                writable,
            });
        }
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let arr: Vec<xen_sys::xen_pfn_t> = gfns.iter().map(|&g| g as _).collect();
        let mut errs = vec![0i32; gfns.len()];
        // SAFETY: arr and errs hold gfns.len() entries each.
        let p = unsafe {
            self.libs.fmem.xenforeignmemory_map(
                self.fmem,
                dom,
                prot,
                arr.len(),
                arr.as_ptr(),
                errs.as_mut_ptr(),
            )
        };
        if p.is_null() {
            return Err(xc_error(dom, "map_pages", last_errno()));
        }
        let m = Mapping {
            h: self,
            ptr: p as *mut u8,
            n: gfns.len(),
            writable,
        };
        if let Some(i) = errs.iter().position(|&e| e != 0) {
            let errno = crate::hv::Errno::from_raw(errs[i].abs());
            let e = std::io::Error::from(errno);
            return Err(HvError::Op {
                dom,
                op: "map_pages",
                msg: format!("gfn {:#x} (entry {i} of {}): {e}", gfns[i], gfns.len()),
                errno: Some(errno),
            });
        }
        Ok(m)
    }

    // --- hypercall buffers -----------------------------------------------

    pub fn hbuf(&self, dom: DomId, pages: usize) -> Result<HBuf<'_>> {
        let mut b: Box<xc_hypercall_buffer_t> = Box::default();
        let xc = self.xc();
        // SAFETY: b is a zeroed buffer descriptor that lives as long as HBuf.
        let p = unsafe {
            xc.lib
                .xc__hypercall_buffer_alloc_pages(xc.xch, &mut *b, pages as i32)
        };
        drop(xc);
        if p.is_null() {
            return Err(xc_error(dom, "hypercall buffer", last_errno()));
        }
        // SAFETY: the allocation is `pages` whole pages; start from zeroes.
        unsafe { std::ptr::write_bytes(p as *mut u8, 0, pages * 4096) };
        Ok(HBuf { h: self, b, pages })
    }
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| HvError::Invalid {
        op: "xenstore",
        msg: format!("path {s:?} contains a NUL byte"),
    })
}

/// Hypercall-safe memory (`xc_hypercall_buffer_alloc_pages`).
pub struct HBuf<'a> {
    h: &'a Handles,
    b: Box<xc_hypercall_buffer_t>,
    pages: usize,
}

// SAFETY: the buffer is owned memory with no thread affinity; it is only
// freed through the locked xc handle.
unsafe impl Send for HBuf<'_> {}

impl HBuf<'_> {
    pub fn desc(&mut self) -> *mut xc_hypercall_buffer_t {
        &mut *self.b
    }
    pub fn ptr(&self) -> *mut c_void {
        self.b.hbuf
    }
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: hbuf points at `pages` whole pages owned by this buffer.
        unsafe { std::slice::from_raw_parts(self.b.hbuf as *const u8, self.pages * 4096) }
    }
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for bytes, and &mut self makes it exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.b.hbuf as *mut u8, self.pages * 4096) }
    }
    pub fn words(&self) -> &[u64] {
        // SAFETY: page-aligned memory of pages*4096 bytes is valid as u64s.
        unsafe { std::slice::from_raw_parts(self.b.hbuf as *const u64, self.pages * 512) }
    }
}

impl Drop for HBuf<'_> {
    fn drop(&mut self) {
        let xc = self.h.xc();
        // SAFETY: the buffer was allocated by alloc_pages with this count.
        unsafe {
            xc.lib
                .xc__hypercall_buffer_free_pages(xc.xch, &mut *self.b, self.pages as i32)
        };
    }
}

/// A batch of guest frames mapped with `xenforeignmemory_map`.
pub struct Mapping<'a> {
    h: &'a Handles,
    ptr: *mut u8,
    n: usize,
    writable: bool,
}

impl PageMapping for Mapping<'_> {
    fn len(&self) -> usize {
        self.n
    }
    fn page(&self, i: usize) -> GuestPage<'_> {
        assert!(i < self.n, "page {i} of a {}-page mapping", self.n);
        // SAFETY: page i lies inside the n-page, page-aligned mapping, which
        // stays until Drop; the guest may write it, GuestPage only copies.
        unsafe { GuestPage::new(self.ptr.add(i * 4096)) }
    }
    fn page_mut(&mut self, i: usize) -> GuestPageMut<'_> {
        assert!(i < self.n, "page {i} of a {}-page mapping", self.n);
        assert!(self.writable, "page_mut on a read-only mapping");
        // SAFETY: as in `page`, and the mapping is PROT_WRITE.
        unsafe { GuestPageMut::new(self.ptr.add(i * 4096)) }
    }
}

impl Drop for Mapping<'_> {
    fn drop(&mut self) {
        if self.n > 0 {
            // SAFETY: ptr/n are exactly what xenforeignmemory_map returned.
            unsafe {
                self.h.libs.fmem.xenforeignmemory_unmap(
                    self.h.fmem,
                    self.ptr as *mut c_void,
                    self.n,
                )
            };
        }
    }
}
