//! Page bitmaps: Xen's dirty log, the hot set, deferred pages.
//!
//! One bit per pfn in native `u64` words, which is also the layout of Xen's
//! log-dirty bitmap on x86-64 (bit p of the array is pfn p).

/// A fixed-size bitmap over pfns `0..len`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bitmap {
    words: Vec<u64>,
    len: u64,
}

impl std::fmt::Debug for Bitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitmap(len={}, set={})", self.len, self.count())
    }
}

impl Bitmap {
    pub fn new(len: u64) -> Self {
        Bitmap {
            words: vec![0; len.div_ceil(64) as usize],
            len,
        }
    }

    /// All bits set.
    pub fn full(len: u64) -> Self {
        let mut b = Bitmap::new(len);
        b.set_all();
        b
    }

    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The words, for backends that fill them directly.
    pub fn words(&self) -> &[u64] {
        &self.words
    }
    pub fn words_mut(&mut self) -> &mut [u64] {
        &mut self.words
    }

    /// Clear bits beyond `len` in the last word (after a raw fill).
    pub fn trim(&mut self) {
        let tail = self.len % 64;
        if tail != 0 {
            if let Some(w) = self.words.last_mut() {
                *w &= (1u64 << tail) - 1;
            }
        }
    }

    #[inline]
    pub fn get(&self, i: u64) -> bool {
        i < self.len && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    #[inline]
    pub fn set(&mut self, i: u64) {
        assert!(i < self.len, "bit {i} out of range {}", self.len);
        self.words[(i / 64) as usize] |= 1 << (i % 64);
    }
    #[inline]
    pub fn clear(&mut self, i: u64) {
        if i < self.len {
            self.words[(i / 64) as usize] &= !(1 << (i % 64));
        }
    }
    pub fn set_all(&mut self) {
        self.words.iter_mut().for_each(|w| *w = !0);
        self.trim();
    }
    pub fn clear_all(&mut self) {
        self.words.iter_mut().for_each(|w| *w = 0);
    }
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| w.count_ones() as u64).sum()
    }
    pub fn any(&self) -> bool {
        self.words.iter().any(|&w| w != 0)
    }

    fn zip_with(&mut self, other: &Bitmap, f: impl Fn(u64, u64) -> u64) {
        assert_eq!(self.len, other.len, "bitmap sizes differ");
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a = f(*a, *b);
        }
    }
    /// self |= other
    pub fn or_with(&mut self, other: &Bitmap) {
        self.zip_with(other, |a, b| a | b)
    }
    /// self &= other
    pub fn and_with(&mut self, other: &Bitmap) {
        self.zip_with(other, |a, b| a & b)
    }
    /// self &= !other
    pub fn and_not(&mut self, other: &Bitmap) {
        self.zip_with(other, |a, b| a & !b)
    }
    pub fn copy_from(&mut self, other: &Bitmap) {
        self.zip_with(other, |_, b| b)
    }

    /// Lengthen to `len` bits (new bits clear), keeping the bits set; a
    /// shorter `len` is ignored. The words grow in place, amortised.
    pub fn grow_to(&mut self, len: u64) {
        if len <= self.len {
            return;
        }
        // Bits past the old end may be set by a raw fill: they are not ours.
        self.trim();
        self.words.resize(len.div_ceil(64) as usize, 0);
        self.len = len;
    }

    /// Set bits in ascending order.
    pub fn iter_ones(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as u64;
                w &= w - 1;
                Some(wi as u64 * 64 + b)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn full_respects_len() {
        let b = Bitmap::full(130);
        assert_eq!(b.count(), 130);
        assert!(b.get(129));
        assert!(!b.get(130));
    }

    #[test]
    fn grow_to_keeps_bits_and_clears_new_ones() {
        let mut b = Bitmap::new(70);
        b.set(3);
        b.set(69);
        b.grow_to(10);
        assert_eq!(b.len(), 70);
        b.grow_to(1000);
        assert_eq!(b.len(), 1000);
        assert_eq!(b.iter_ones().collect::<Vec<_>>(), vec![3, 69]);
        b.set(999);
        assert_eq!(b.count(), 3);
    }

    proptest! {
        #[test]
        fn iter_ones_matches_set_bits(len in 1u64..500, bits in proptest::collection::vec(0u64..500, 0..100)) {
            let mut b = Bitmap::new(len);
            let mut want: Vec<u64> = bits.into_iter().filter(|&x| x < len).collect();
            for &x in &want { b.set(x); }
            want.sort();
            want.dedup();
            prop_assert_eq!(b.iter_ones().collect::<Vec<_>>(), want.clone());
            prop_assert_eq!(b.count(), want.len() as u64);
        }

        #[test]
        fn set_ops(len in 1u64..300, a in proptest::collection::vec(any::<bool>(), 300), c in proptest::collection::vec(any::<bool>(), 300)) {
            let mut x = Bitmap::new(len);
            let mut y = Bitmap::new(len);
            for i in 0..len {
                if a[i as usize] {
                    x.set(i);
                }
                if c[i as usize] {
                    y.set(i);
                }
            }
            let mut o = x.clone(); o.or_with(&y);
            let mut n = x.clone(); n.and_with(&y);
            let mut d = x.clone(); d.and_not(&y);
            for i in 0..len {
                let (p, q) = (a[i as usize], c[i as usize]);
                prop_assert_eq!(o.get(i), p || q);
                prop_assert_eq!(n.get(i), p && q);
                prop_assert_eq!(d.get(i), p && !q);
            }
        }
    }
}
