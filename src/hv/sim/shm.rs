//! A file mapped `MAP_SHARED`: guest RAM and the per-domain "hypervisor"
//! state are such files under /dev/shm, mapped by the guest process and by
//! every toolstack process that works on the domain.
//!
//! The memory is shared with other processes that write it concurrently, as
//! Xen's foreign mappings are; byte access goes through copies or raw
//! pointers, and words that carry protocol state go through atomics.

use crate::hv::{HvError, Result};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

pub struct Shm {
    ptr: NonNull<u8>,
    len: usize,
    path: PathBuf,
    /// Kept open for [`Shm::allocate`].
    file: File,
}

// SAFETY: the mapping is plain shared memory; all access goes through raw
// pointers or atomics, never through long-lived references owned by the Shm.
unsafe impl Send for Shm {}
// SAFETY: as above; concurrent access is the point of the mapping.
unsafe impl Sync for Shm {}

impl std::fmt::Debug for Shm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shm({}, {} bytes)", self.path.display(), self.len)
    }
}

fn map(file: &File, len: usize, path: &Path) -> Result<NonNull<u8>> {
    if len == 0 {
        return Err(HvError::Invalid {
            op: "map",
            msg: format!("{} is empty", path.display()),
        });
    }
    // SAFETY: mapping a file we hold open, length checked non-zero; the
    // kernel picks the address. The result is checked for MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(HvError::io(
            format!("mmap {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    NonNull::new(p as *mut u8).ok_or_else(|| HvError::Invalid {
        op: "map",
        msg: "mmap returned NULL".into(),
    })
}

impl Shm {
    /// Create a new zero-filled file of `len` bytes (fails if it exists).
    pub fn create(path: &Path, len: usize) -> Result<Shm> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| HvError::io(format!("create {}", path.display()), e))?;
        file.set_len(len as u64)
            .map_err(|e| HvError::io(format!("size {}", path.display()), e))?;
        let ptr = map(&file, len, path)?;
        Ok(Shm {
            ptr,
            len,
            path: path.to_path_buf(),
            file,
        })
    }

    /// Map an existing file whole.
    pub fn open(path: &Path) -> Result<Shm> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| HvError::io(format!("open {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| HvError::io(format!("stat {}", path.display()), e))?
            .len() as usize;
        let ptr = map(&file, len, path)?;
        Ok(Shm {
            ptr,
            len,
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn check(&self, off: usize, len: usize) -> Result<()> {
        match off.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(HvError::Invalid {
                op: "shared memory access",
                msg: format!(
                    "{len} bytes at {off:#x} beyond {} ({} bytes)",
                    self.path.display(),
                    self.len
                ),
            }),
        }
    }

    /// Back `len` bytes at `off` with memory now (`fallocate`), as Xen's
    /// populate allocates a frame when it is asked: the first touch of each
    /// page then finds it allocated and cleared, wherever it comes from (a
    /// guest, a toolstack's mapping). Nothing is mapped into this process.
    pub fn allocate(&self, off: usize, len: usize) -> Result<()> {
        self.check(off, len)?;
        if len == 0 {
            return Ok(());
        }
        // SAFETY: fallocate on a file descriptor we own, inside its size
        // (checked above); mode 0 only allocates, the contents stay zero.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                0,
                off as libc::off_t,
                len as libc::off_t,
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            // a file system without fallocate: pages come at first touch
            if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
                return Err(HvError::io(
                    format!(
                        "allocate {len} bytes at {off:#x} of {}",
                        self.path.display()
                    ),
                    e,
                ));
            }
        }
        Ok(())
    }

    /// Copy bytes out of the mapping.
    pub fn read(&self, off: usize, buf: &mut [u8]) -> Result<()> {
        self.check(off, buf.len())?;
        // SAFETY: range checked above; the source may be written concurrently
        // by another process, which only makes the copy a torn snapshot.
        unsafe {
            std::ptr::copy_nonoverlapping(self.as_ptr().add(off), buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }

    pub fn read_vec(&self, off: usize, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len];
        self.read(off, &mut v)?;
        Ok(v)
    }

    /// Copy bytes into the mapping.
    pub fn write(&self, off: usize, data: &[u8]) -> Result<()> {
        self.check(off, data.len())?;
        // SAFETY: range checked above; the mapping is writable.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.as_ptr().add(off), data.len()) };
        Ok(())
    }

    /// Zero a range.
    pub fn zero(&self, off: usize, len: usize) -> Result<()> {
        self.check(off, len)?;
        // SAFETY: range checked above.
        unsafe { std::ptr::write_bytes(self.as_ptr().add(off), 0, len) };
        Ok(())
    }

    pub fn atomic_u32(&self, off: usize) -> Result<&AtomicU32> {
        self.check(off, 4)?;
        if off % 4 != 0 {
            return Err(HvError::Invalid {
                op: "shared memory access",
                msg: format!("misaligned u32 at {off:#x}"),
            });
        }
        // SAFETY: in range and aligned (the mapping is page aligned);
        // AtomicU32 has the layout of u32 and may alias shared memory.
        Ok(unsafe { &*(self.as_ptr().add(off) as *const AtomicU32) })
    }

    pub fn atomic_u64(&self, off: usize) -> Result<&AtomicU64> {
        self.check(off, 8)?;
        if off % 8 != 0 {
            return Err(HvError::Invalid {
                op: "shared memory access",
                msg: format!("misaligned u64 at {off:#x}"),
            });
        }
        // SAFETY: in range and aligned; AtomicU64 has the layout of u64.
        Ok(unsafe { &*(self.as_ptr().add(off) as *const AtomicU64) })
    }

    /// The words of a range as atomics (for bitmaps shared between processes).
    pub fn atomic_u64s(&self, off: usize, count: usize) -> Result<&[AtomicU64]> {
        self.check(off, count * 8)?;
        if off % 8 != 0 {
            return Err(HvError::Invalid {
                op: "shared memory access",
                msg: format!("misaligned u64 array at {off:#x}"),
            });
        }
        // SAFETY: in range, aligned, AtomicU64 is layout-compatible with u64.
        Ok(
            unsafe {
                std::slice::from_raw_parts(self.as_ptr().add(off) as *const AtomicU64, count)
            },
        )
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped; no views outlive self.
        unsafe {
            libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.len);
        }
    }
}
