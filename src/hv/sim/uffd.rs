//! Kernel write tracking: userfaultfd async write-protect (guest side) and
//! the PAGEMAP_SCAN ioctl on /proc/PID/pagemap (toolstack side).
//!
//! Debian 12's headers predate these (Linux 6.7), so the numbers and structs
//! are written out here from the kernel's include/uapi/linux/userfaultfd.h
//! and include/uapi/linux/fs.h.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const UFFD_API: u64 = 0xAA;
const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
const USERFAULTFD_IOC_NEW: libc::c_ulong = 0xAA00; // _IO(0xAA, 0)

const fn iowr(ty: u8, nr: u8, size: usize) -> libc::c_ulong {
    ((3u64 << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64) as libc::c_ulong
}

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

const UFFDIO_API: libc::c_ulong = iowr(0xAA, 0x3F, std::mem::size_of::<UffdioApi>());
const UFFDIO_REGISTER: libc::c_ulong = iowr(0xAA, 0x00, std::mem::size_of::<UffdioRegister>());

/// PAGEMAP_SCAN flags and page categories.
pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;

#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

const PAGEMAP_SCAN: libc::c_ulong = iowr(b'f', 16, std::mem::size_of::<PmScanArg>());

fn ioctl<T>(fd: libc::c_int, req: libc::c_ulong, arg: &mut T) -> io::Result<libc::c_int> {
    // SAFETY: `arg` is a live, correctly laid out struct for `req` (the
    // request numbers encode its size); the kernel writes only within it.
    let r = unsafe { libc::ioctl(fd, req as _, arg as *mut T) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A userfaultfd with async write-protect tracking registered over a range.
/// Dropping it (closing the fd) ends the tracking.
#[derive(Debug)]
pub struct WriteTracker {
    _fd: OwnedFd,
}

fn open_uffd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with flags only.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd >= 0 {
        // SAFETY: the kernel just returned this fd to us; we own it.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) });
    }
    let first = io::Error::last_os_error();
    // Without CAP_SYS_PTRACE the syscall may be refused; /dev/userfaultfd
    // hands out the same object to its owner.
    let dev = File::open("/dev/userfaultfd").map_err(|_| first)?;
    // SAFETY: USERFAULTFD_IOC_NEW takes the flags as its integer argument.
    let fd = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            USERFAULTFD_IOC_NEW as _,
            libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd returned by the kernel, owned by us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl WriteTracker {
    /// Register `[addr, addr+len)` (page aligned, a shared file mapping of
    /// this process) for async write-protect tracking.
    pub fn register(addr: u64, len: u64) -> io::Result<WriteTracker> {
        let fd = open_uffd()?;
        let mut api = UffdioApi {
            api: UFFD_API,
            features: UFFD_FEATURE_WP_ASYNC
                | UFFD_FEATURE_WP_UNPOPULATED
                | UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
            ioctls: 0,
        };
        ioctl(fd.as_raw_fd(), UFFDIO_API, &mut api)?;
        let mut reg = UffdioRegister {
            range: UffdioRange { start: addr, len },
            mode: UFFDIO_REGISTER_MODE_WP,
            ioctls: 0,
        };
        ioctl(fd.as_raw_fd(), UFFDIO_REGISTER, &mut reg)?;
        Ok(WriteTracker { _fd: fd })
    }
}

/// PAGEMAP_SCAN over another process's range: calls `on_written(first_page,
/// page_count)` for each run of written pages (page indices relative to
/// `start`). With `clear`, the reported pages are write-protected again in
/// the same walk (Xen's CLEAN); without, nothing changes (PEEK).
pub fn scan_written(
    pagemap: &File,
    start: u64,
    len: u64,
    clear: bool,
    mut on_written: impl FnMut(u64, u64),
) -> io::Result<()> {
    const VEC_LEN: usize = 4096;
    let mut regions = vec![PageRegion::default(); VEC_LEN];
    let end = start + len;
    let mut cur = start;
    while cur < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            flags: PM_SCAN_CHECK_WPASYNC | if clear { PM_SCAN_WP_MATCHING } else { 0 },
            start: cur,
            end,
            vec: regions.as_mut_ptr() as u64,
            vec_len: VEC_LEN as u64,
            category_mask: PAGE_IS_WRITTEN,
            return_mask: PAGE_IS_WRITTEN,
            ..Default::default()
        };
        let n = ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN, &mut arg)? as usize;
        for r in regions.iter().take(n.min(VEC_LEN)) {
            if r.end > r.start && r.start >= start && r.end <= end {
                on_written((r.start - start) / 4096, (r.end - r.start) / 4096);
            }
        }
        if arg.walk_end <= cur {
            return Err(io::Error::other(format!(
                "PAGEMAP_SCAN made no progress at {cur:#x}"
            )));
        }
        cur = arg.walk_end;
    }
    Ok(())
}
