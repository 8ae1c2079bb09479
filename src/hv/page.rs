//! Guest frames mapped into this process, accessed without Rust references.
//!
//! A frame mapped from a guest (`xenforeignmemory_map`, or the simulated
//! host's shared RAM) can be written at any moment by the guest's vCPUs or by
//! Xen. A `&[u8]` to it would promise the compiler that the bytes do not
//! change while the reference lives, which is false; so the engines never get
//! one. They get a [`GuestPage`] (read) or a [`GuestPageMut`] (read and
//! write), which copy in and out with volatile word accesses, in the manner
//! of rust-vmm's `VolatileSlice`: what a copy sees of a page the guest is
//! writing is a torn snapshot, never undefined behaviour.
//!
//! Frames are (at least) 8-byte aligned, so whole-page copies go a u64 word
//! at a time.

use std::marker::PhantomData;
use std::ptr::NonNull;

/// Bytes in a guest frame.
pub const PAGE_SIZE: usize = 4096;
const WORDS: usize = PAGE_SIZE / 8;

/// One mapped guest frame, read-only. Copying the handle copies the pointer,
/// not the page.
#[derive(Clone, Copy)]
pub struct GuestPage<'a> {
    ptr: NonNull<u64>,
    _mapping: PhantomData<&'a ()>,
}

impl std::fmt::Debug for GuestPage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GuestPage({:p})", self.ptr)
    }
}

impl<'a> GuestPage<'a> {
    /// # Safety
    /// `ptr` must be 8-byte aligned (mapped frames are page aligned) and
    /// point at [`PAGE_SIZE`] readable bytes
    /// that stay mapped for `'a`. Others (the guest, Xen, other processes)
    /// may write them at any time; nobody in this process may hold a Rust
    /// reference to them.
    pub unsafe fn new(ptr: *const u8) -> GuestPage<'a> {
        debug_assert!(ptr as usize % 8 == 0, "unaligned frame {ptr:p}");
        GuestPage {
            // SAFETY: a mapped frame is never at address 0 (the caller's
            // promise); `NonNull::new` would only add a check.
            ptr: unsafe { NonNull::new_unchecked(ptr as *mut u64) },
            _mapping: PhantomData,
        }
    }

    /// The frame's address, for vectored I/O that reads it in the kernel.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr() as *const u8
    }

    /// An iovec for `writev(2)`-style calls that read the frame in the
    /// kernel, with no Rust reference in between.
    pub fn iovec(&self) -> libc::iovec {
        libc::iovec {
            iov_base: self.ptr.as_ptr() as *mut libc::c_void,
            iov_len: PAGE_SIZE,
        }
    }

    fn word(&self, i: usize) -> u64 {
        assert!(i < WORDS);
        // SAFETY: word i < 512 lies inside the aligned, mapped frame (`new`);
        // volatile because others may write it concurrently.
        unsafe { self.ptr.as_ptr().add(i).read_volatile() }
    }

    fn byte(&self, off: usize) -> u8 {
        assert!(off < PAGE_SIZE);
        // SAFETY: in bounds of the mapped frame; volatile as in `word`.
        unsafe { (self.ptr.as_ptr() as *const u8).add(off).read_volatile() }
    }

    /// Copy the whole frame into `out`, which must be [`PAGE_SIZE`] bytes.
    pub fn copy_to(&self, out: &mut [u8]) {
        assert_eq!(out.len(), PAGE_SIZE, "copy_to needs a page-sized buffer");
        for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&self.word(i).to_ne_bytes());
        }
    }

    /// A private copy of the frame.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; PAGE_SIZE];
        self.copy_to(&mut v);
        v
    }

    /// Whether every byte of the frame is zero (as read now).
    pub fn is_zero(&self) -> bool {
        (0..WORDS).all(|i| self.word(i) == 0)
    }

    /// Whether the frame holds exactly `data` (a [`PAGE_SIZE`] buffer) now.
    pub fn matches(&self, data: &[u8]) -> bool {
        data.len() == PAGE_SIZE
            && data
                .chunks_exact(8)
                .enumerate()
                .all(|(i, c)| self.word(i).to_ne_bytes() == c)
    }

    /// The little-endian u64 at byte offset `off` (any alignment).
    pub fn read_u64(&self, off: usize) -> u64 {
        assert!(off <= PAGE_SIZE - 8, "u64 at {off:#x} beyond the page");
        if off % 8 == 0 {
            return u64::from_le(self.word(off / 8));
        }
        let mut b = [0u8; 8];
        for (k, x) in b.iter_mut().enumerate() {
            *x = self.byte(off + k);
        }
        u64::from_le_bytes(b)
    }

    /// The little-endian u32 at byte offset `off` (any alignment).
    pub fn read_u32(&self, off: usize) -> u32 {
        assert!(off <= PAGE_SIZE - 4, "u32 at {off:#x} beyond the page");
        let mut b = [0u8; 4];
        for (k, x) in b.iter_mut().enumerate() {
            *x = self.byte(off + k);
        }
        u32::from_le_bytes(b)
    }
}

/// One mapped guest frame, writable. Not `Copy`: a mapping hands out one
/// writer per frame at a time (`PageMapping::page_mut` takes `&mut self`).
/// Derefs to [`GuestPage`] for reading.
pub struct GuestPageMut<'a> {
    page: GuestPage<'a>,
}

impl std::fmt::Debug for GuestPageMut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GuestPageMut({:p})", self.page.ptr)
    }
}

impl<'a> std::ops::Deref for GuestPageMut<'a> {
    type Target = GuestPage<'a>;
    fn deref(&self) -> &GuestPage<'a> {
        &self.page
    }
}

impl<'a> GuestPageMut<'a> {
    /// # Safety
    /// As [`GuestPage::new`], and the bytes must be mapped writable.
    pub unsafe fn new(ptr: *mut u8) -> GuestPageMut<'a> {
        GuestPageMut {
            // SAFETY: the caller's promise covers `GuestPage::new`'s.
            page: unsafe { GuestPage::new(ptr) },
        }
    }

    /// The frame's address, for vectored I/O that writes it in the kernel.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.page.ptr.as_ptr() as *mut u8
    }

    fn set_word(&mut self, i: usize, v: u64) {
        assert!(i < WORDS);
        // SAFETY: word i lies inside the aligned frame, mapped writable
        // (`new`); volatile because others may access it concurrently.
        unsafe { self.page.ptr.as_ptr().add(i).write_volatile(v) }
    }

    fn set_byte(&mut self, off: usize, v: u8) {
        assert!(off < PAGE_SIZE);
        // SAFETY: in bounds of the writable frame; volatile as in `set_word`.
        unsafe {
            (self.page.ptr.as_ptr() as *mut u8)
                .add(off)
                .write_volatile(v)
        }
    }

    /// Overwrite the whole frame with `data`, which must be [`PAGE_SIZE`] bytes.
    pub fn copy_from(&mut self, data: &[u8]) {
        assert_eq!(data.len(), PAGE_SIZE, "copy_from needs a page-sized buffer");
        for (i, chunk) in data.chunks_exact(8).enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            self.set_word(i, u64::from_ne_bytes(w));
        }
    }

    /// Set every byte of the frame to `byte`.
    pub fn fill(&mut self, byte: u8) {
        let w = u64::from_ne_bytes([byte; 8]);
        for i in 0..WORDS {
            self.set_word(i, w);
        }
    }

    /// Zero the frame.
    pub fn zero(&mut self) {
        self.fill(0)
    }

    /// Store `v` little-endian at byte offset `off` (any alignment).
    pub fn write_u64(&mut self, off: usize, v: u64) {
        assert!(off <= PAGE_SIZE - 8, "u64 at {off:#x} beyond the page");
        if off % 8 == 0 {
            return self.set_word(off / 8, v.to_le());
        }
        for (k, b) in v.to_le_bytes().into_iter().enumerate() {
            self.set_byte(off + k, b);
        }
    }

    /// Store `v` little-endian at byte offset `off` (any alignment).
    pub fn write_u32(&mut self, off: usize, v: u32) {
        assert!(off <= PAGE_SIZE - 4, "u32 at {off:#x} beyond the page");
        for (k, b) in v.to_le_bytes().into_iter().enumerate() {
            self.set_byte(off + k, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page-aligned private frame to stand in for a mapped one.
    #[repr(C, align(4096))]
    struct Frame([u8; PAGE_SIZE]);

    fn frame() -> Box<Frame> {
        Box::new(Frame([0; PAGE_SIZE]))
    }

    #[test]
    fn is_zero_finds_any_byte() {
        let mut f = frame();
        for i in [0, 7, 8, 63, 2048, 4095] {
            f.0[i] = 0x80;
            // SAFETY: `f` is an aligned page that outlives the handle, and
            // no reference to it is used while the handle is.
            let p = unsafe { GuestPage::new(f.0.as_ptr()) };
            assert!(!p.is_zero(), "byte {i}");
            f.0[i] = 0;
            // SAFETY: as above.
            assert!(unsafe { GuestPage::new(f.0.as_ptr()) }.is_zero());
        }
    }

    #[test]
    fn copies_round_trip_and_compare() {
        let mut f = frame();
        // SAFETY: `f` is an aligned page that outlives the handle, and no
        // reference to it is used while the handle is.
        let mut p = unsafe { GuestPageMut::new(f.0.as_mut_ptr()) };
        assert!(p.is_zero());
        let data: Vec<u8> = (0..PAGE_SIZE).map(|i| (i * 7 + 3) as u8).collect();
        p.copy_from(&data);
        assert!(!p.is_zero());
        assert!(p.matches(&data));
        assert_eq!(p.to_vec(), data);
        let mut other = data.clone();
        other[4095] ^= 1;
        assert!(!p.matches(&other));
        assert!(!p.matches(&data[..4088]));
        p.fill(0xab);
        assert!(p.matches(&[0xab; PAGE_SIZE]));
        p.zero();
        assert!(p.is_zero());
    }

    #[test]
    fn integers_are_little_endian_at_any_offset() {
        let mut f = frame();
        // SAFETY: as above.
        let mut p = unsafe { GuestPageMut::new(f.0.as_mut_ptr()) };
        p.write_u64(8, 0x0102_0304_0506_0708);
        p.write_u64(4085, 0x1122_3344_5566_7788);
        p.write_u32(4092, 0xdead_beef);
        assert_eq!(p.read_u64(8), 0x0102_0304_0506_0708);
        assert_eq!(p.read_u32(12), 0x0102_0304);
        assert_eq!(p.read_u32(4092), 0xdead_beef);
        assert_eq!(p.read_u64(4085) & 0xff_ffff_ffff, 0x44_5566_7788);
        let v = p.to_vec();
        assert_eq!(v[8], 0x08);
        assert_eq!(v[15], 0x01);
        assert_eq!(v[4092..4096], 0xdead_beefu32.to_le_bytes());
    }

    #[test]
    #[should_panic(expected = "beyond the page")]
    fn an_integer_past_the_end_panics() {
        let f = frame();
        // SAFETY: as above (read-only).
        let p = unsafe { GuestPage::new(f.0.as_ptr()) };
        p.read_u64(4089);
    }

    #[test]
    fn iovec_covers_the_frame() {
        let f = frame();
        // SAFETY: as above (read-only).
        let p = unsafe { GuestPage::new(f.0.as_ptr()) };
        let iov = p.iovec();
        assert_eq!(iov.iov_base as *const u8, f.0.as_ptr());
        assert_eq!(iov.iov_len, PAGE_SIZE);
        assert_eq!(p.as_ptr(), f.0.as_ptr());
    }
}
