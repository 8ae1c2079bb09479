//! rxm-trace-shim: an LD_PRELOAD library that records which pages of its own
//! process the program writes, every few milliseconds.
//!
//! Kernel write tracking from inside the process: a userfaultfd with
//! `UFFD_FEATURE_WP_ASYNC` (writes are never blocked; the kernel just marks
//! the page written) registered in write-protect mode over the process's
//! private anonymous writable mappings (heap, stack, anonymous mmaps), and
//! the `PAGEMAP_SCAN` ioctl on /proc/self/pagemap with `PAGE_IS_WRITTEN`,
//! `PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC`: one walk that reports the
//! pages written since the last walk and write-protects them again.
//!
//! A thread started by the library's constructor does, every interval:
//! re-read /proc/self/maps (the heap grows, mappings come and go), register
//! every eligible mapping (registering again is a no-op), scan each one, and
//! append one record to `$RXM_TRACE_OUT.<pid>.raw`. Nothing else runs in the
//! program's threads. `$RXM_TRACE_INTERVAL_MS` sets the interval (default 5).
//!
//! The raw file (packed into a trace by `examples/trace_pack.rs`):
//! `"RXMRAW01"`, u64 interval ns, u64 pid; then records: u64 CLOCK_MONOTONIC
//! ns, then (u64 first virtual page number, u64 page count) pairs, ended by
//! a pair whose first word is u64::MAX. All little-endian.
//!
//! What it cannot see: writes to file-backed or shared mappings, writes
//! through pages pinned before the scan (DMA, O_DIRECT, io_uring buffers),
//! child processes that fork without exec (exec'd children load the shim
//! again and write their own file), and several writes to one page between
//! two scans (one write in the trace). The shim's own stack and scratch
//! mapping are left out; the few heap allocations Rust's thread start makes
//! are not.

use std::io;
use std::time::Duration;

const PAGE: u64 = 4096;
const UFFD_API: u64 = 0xAA;
const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
const PAGE_IS_WRITTEN: u64 = 1 << 1;

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
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

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

const UFFDIO_API: libc::c_ulong = iowr(0xAA, 0x3F, std::mem::size_of::<UffdioApi>());
const UFFDIO_REGISTER: libc::c_ulong = iowr(0xAA, 0x00, std::mem::size_of::<UffdioRegister>());
const PAGEMAP_SCAN: libc::c_ulong = iowr(b'f', 16, std::mem::size_of::<PmScanArg>());

/// Scratch: the maps text, the scan regions, the output buffer. One private
/// mapping the tracker never registers, so its own bookkeeping is not traced.
const MAPS_BYTES: usize = 4 << 20;
const REGIONS: usize = 4096;
const OUT_BYTES: usize = 4 << 20;
const SCRATCH_BYTES: usize = MAPS_BYTES + REGIONS * 24 + OUT_BYTES;

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = start;

extern "C" fn start() {
    let Some(prefix) = std::env::var_os("RXM_TRACE_OUT") else {
        return;
    };
    let interval_ms = std::env::var("RXM_TRACE_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&v| v > 0)
        .unwrap_or(5);
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let mut path = prefix.into_encoded_bytes();
    path.extend_from_slice(format!(".{pid}.raw\0").as_bytes());
    let spawned = std::thread::Builder::new()
        .name("rxm-trace".into())
        .spawn(move || {
            if let Err(e) = run(&path, pid, interval_ms) {
                eprintln!("rxm-trace-shim (pid {pid}): stopped: {e}");
            }
        });
    if let Err(e) = spawned {
        eprintln!("rxm-trace-shim (pid {pid}): no tracker thread: {e}");
    }
}

fn cvt(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn ioctl<T>(fd: libc::c_int, req: libc::c_ulong, arg: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `arg` is a live struct laid out as `req` expects (the request
    // number encodes its size); the kernel writes only within it.
    cvt(unsafe { libc::ioctl(fd, req as _, arg as *mut T) } as libc::c_long)
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the kernel to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

struct Out<'a> {
    fd: libc::c_int,
    buf: &'a mut [u8],
    len: usize,
}

impl Out<'_> {
    fn put(&mut self, v: u64) -> io::Result<()> {
        if self.len + 8 > self.buf.len() {
            self.flush()?;
        }
        self.buf[self.len..self.len + 8].copy_from_slice(&v.to_le_bytes());
        self.len += 8;
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        let mut done = 0;
        while done < self.len {
            let rest = &self.buf[done..self.len];
            // SAFETY: writes from a live slice of `rest.len()` bytes.
            let n = unsafe { libc::write(self.fd, rest.as_ptr().cast(), rest.len()) };
            match cvt(n as libc::c_long) {
                Ok(n) => done += n as usize,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.len = 0;
        Ok(())
    }
}

/// Read /proc/self/maps whole into `buf`; returns its length.
fn read_maps(buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: a NUL-terminated literal path.
    let fd = cvt(unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    } as libc::c_long)? as libc::c_int;
    let mut len = 0;
    let res = loop {
        if len == buf.len() {
            break Err(io::Error::other(
                "/proc/self/maps larger than the scratch buffer",
            ));
        }
        let rest = &mut buf[len..];
        // SAFETY: reads into a live mutable slice of `rest.len()` bytes.
        let n = unsafe { libc::read(fd, rest.as_mut_ptr().cast(), rest.len()) };
        match cvt(n as libc::c_long) {
            Ok(0) => break Ok(len),
            Ok(n) => len += n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    // SAFETY: closes the fd opened above, used nowhere else.
    unsafe { libc::close(fd) };
    res
}

fn hex(s: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &c in s {
        v = v.checked_mul(16)? + (c as char).to_digit(16)? as u64;
    }
    Some(v)
}

/// The mapping a maps line describes, if it is private, writable and anonymous
/// (no file: heap, stack, anonymous mmaps).
fn eligible(line: &[u8]) -> Option<(u64, u64)> {
    let mut f = line.split(|&c| c == b' ').filter(|s| !s.is_empty());
    let range = f.next()?;
    let perms = f.next()?;
    let _off = f.next()?;
    let _dev = f.next()?;
    let inode = f.next()?;
    let name = f.next().unwrap_or(b"");
    if perms.len() < 4 || perms[1] != b'w' || perms[3] != b'p' || inode != b"0" {
        return None;
    }
    if !(name.is_empty() || name == b"[heap]" || name == b"[stack]") {
        return None;
    }
    let dash = range.iter().position(|&c| c == b'-')?;
    Some((hex(&range[..dash])?, hex(&range[dash + 1..])?))
}

fn run(path: &[u8], pid: libc::pid_t, interval_ms: u64) -> io::Result<()> {
    // SAFETY: plain syscall with flags only.
    let uffd =
        cvt(unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) })?
            as libc::c_int;
    let mut api = UffdioApi {
        api: UFFD_API,
        features: UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED,
        ioctls: 0,
    };
    ioctl(uffd, UFFDIO_API, &mut api)?;
    // SAFETY: a NUL-terminated literal path.
    let pagemap = cvt(unsafe {
        libc::open(
            c"/proc/self/pagemap".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    } as libc::c_long)? as libc::c_int;
    // SAFETY: `path` ends in NUL (built by `start`).
    let fd = cvt(unsafe {
        libc::open(
            path.as_ptr().cast(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644,
        )
    } as libc::c_long)? as libc::c_int;
    // SAFETY: a fresh anonymous private mapping; nothing else refers to it.
    let scratch = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SCRATCH_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if scratch == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let scratch_range = (scratch as u64, scratch as u64 + SCRATCH_BYTES as u64);
    // SAFETY: the mapping is SCRATCH_BYTES long, readable and writable, page
    // aligned, zero-filled, owned by this thread alone for the rest of the
    // process; the three slices below do not overlap.
    let (maps, regions, out) = unsafe {
        let base = scratch.cast::<u8>();
        (
            std::slice::from_raw_parts_mut(base, MAPS_BYTES),
            std::slice::from_raw_parts_mut(base.add(MAPS_BYTES).cast::<PageRegion>(), REGIONS),
            std::slice::from_raw_parts_mut(base.add(MAPS_BYTES + REGIONS * 24), OUT_BYTES),
        )
    };
    let mut out = Out {
        fd,
        buf: out,
        len: 0,
    };
    out.buf[..8].copy_from_slice(b"RXMRAW01");
    out.len = 8;
    out.put(interval_ms * 1_000_000)?;
    out.put(pid as u64)?;
    out.flush()?;
    let my_stack = own_stack()?;
    loop {
        std::thread::sleep(Duration::from_millis(interval_ms));
        let t = now_ns();
        let len = read_maps(maps)?;
        out.put(t)?;
        for line in maps[..len].split(|&c| c == b'\n') {
            let Some((lo, hi)) = eligible(line) else {
                continue;
            };
            // The shim's own stack and scratch may have merged with a
            // neighbouring mapping of the program: leave out just them.
            let (pieces, n) = without(without(([(lo, hi); 3], 1), scratch_range), my_stack);
            for &(lo, hi) in &pieces[..n] {
                let mut reg = UffdioRegister {
                    start: lo,
                    len: hi - lo,
                    mode: UFFDIO_REGISTER_MODE_WP,
                    ioctls: 0,
                };
                if ioctl(uffd, UFFDIO_REGISTER, &mut reg).is_err() {
                    // Gone since the maps were read, or a kind uffd cannot track.
                    continue;
                }
                scan(pagemap, lo, hi, regions, &mut out)?;
            }
        }
        out.put(u64::MAX)?;
        out.put(0)?;
        out.flush()?;
    }
}

/// Up to three ranges minus `[x.0, x.1)`, without allocating (the shim's
/// heap writes would be traced).
type Pieces = ([(u64, u64); 3], usize);
fn without((ranges, n): Pieces, x: (u64, u64)) -> Pieces {
    let mut out = ([(0, 0); 3], 0);
    let mut push = |r: (u64, u64)| {
        if out.1 < 3 {
            out.0[out.1] = r;
            out.1 += 1;
        }
    };
    for &(lo, hi) in &ranges[..n] {
        if x.1 <= lo || hi <= x.0 {
            push((lo, hi));
            continue;
        }
        if lo < x.0 {
            push((lo, x.0));
        }
        if x.1 < hi {
            push((x.1, hi));
        }
    }
    out
}

/// This thread's stack, page aligned.
fn own_stack() -> io::Result<(u64, u64)> {
    // SAFETY: an all-zero pthread_attr_t is only storage; getattr_np
    // initialises it and destroy frees what it allocated.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        let r = libc::pthread_getattr_np(libc::pthread_self(), &mut attr);
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let r = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        let lo = addr as u64 & !(PAGE - 1);
        Ok((lo, (addr as u64 + size as u64).div_ceil(PAGE) * PAGE))
    }
}

/// Report (and write-protect again) the written pages of `[lo, hi)`.
fn scan(
    pagemap: libc::c_int,
    lo: u64,
    hi: u64,
    regions: &mut [PageRegion],
    out: &mut Out,
) -> io::Result<()> {
    let mut cur = lo;
    while cur < hi {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
            start: cur,
            end: hi,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            category_mask: PAGE_IS_WRITTEN,
            return_mask: PAGE_IS_WRITTEN,
            ..Default::default()
        };
        let n = match ioctl(pagemap, PAGEMAP_SCAN, &mut arg) {
            Ok(n) => n as usize,
            // Unmapped or replaced since it was registered: next interval.
            Err(_) => return Ok(()),
        };
        for r in &regions[..n.min(regions.len())] {
            if r.end > r.start {
                out.put(r.start / PAGE)?;
                out.put((r.end - r.start) / PAGE)?;
            }
        }
        if arg.walk_end <= cur {
            break;
        }
        cur = arg.walk_end;
    }
    Ok(())
}
