//! A 64-bit PV guest's P2M as the guest publishes it in shared_info.arch:
//! the virtually mapped linear list (`p2m_cr3`, `p2m_vaddr`; preferred, as
//! in libxenguest) or the 3-level frame-list tree
//! (`pfn_to_mfn_frame_list_list`). Pure logic over a frame reader, so it
//! is tested without Xen.

use crate::x86::pagetable::{
    HYPERVISOR_VIRT_END, HYPERVISOR_VIRT_START, PTE_FRAME_MASK, PTE_PRESENT, PTE_PSE,
};
use crate::x86::shared_info;
use std::collections::HashMap;

/// Entries per P2M page (64-bit guest).
const FPP: u64 = 512;

/// Reads whole guest frames by mfn, concatenated.
pub type ReadFrames<'a> = dyn FnMut(&[u64]) -> Result<Vec<u8>, String> + 'a;

/// The P2M and the machine frames holding its leaves, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawP2m {
    pub p2m: Vec<u64>,
    pub leaf_mfns: Vec<u64>,
}

fn u64_at(page: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&page[i * 8..i * 8 + 8]);
    u64::from_le_bytes(b)
}

fn canonical(va: u64) -> bool {
    ((va as i64) >> 47) == ((va as i64) >> 63)
}

/// Reads the P2M described by the guest's shared info page `si`.
pub fn read(si: &[u8], read: &mut ReadFrames<'_>) -> Result<RawP2m, String> {
    let count = shared_info::max_pfn(si);
    if count == 0 || count > (1 << 40) {
        return Err(format!(
            "shared_info.arch.max_pfn {count:#x} is not a plausible guest size"
        ));
    }
    let cr3 = shared_info::p2m_cr3(si);
    let count = if cr3 != 0 {
        trim_linear(cr3 >> 12, shared_info::p2m_vaddr(si), count, read)?
    } else {
        trim_tree(shared_info::frame_list_list(si), count, read)?
    };
    let leaves = count.div_ceil(FPP);
    let leaf_mfns = if cr3 != 0 {
        linear_leaves(cr3 >> 12, shared_info::p2m_vaddr(si), leaves, read)?
    } else {
        tree_leaves(shared_info::frame_list_list(si), count, leaves, read)?
    };
    let mut p2m = Vec::with_capacity(count as usize);
    for chunk in leaf_mfns.chunks(1024) {
        let pages = read(chunk)?;
        for i in 0..(chunk.len() * FPP as usize) {
            if p2m.len() as u64 == count {
                break;
            }
            p2m.push(u64_at(&pages, i));
        }
    }
    Ok(RawP2m { p2m, leaf_mfns })
}

/// The P2M size Xen's save uses: a guest (Linux) may publish a max_pfn far
/// above its memory and back the tail of its P2M with one shared "missing"
/// page. A run of identical trailing entries one level above the leaves
/// marks such a tail, which libxenguest cuts off (rather than sending
/// millions of empty pfns); these two functions apply its rule.
///
/// Linear list: the level-2 entries covering the list, one per 512 leaves;
/// the list ends before the last run of identical entries, unless that run
/// is the final entry alone.
fn trim_linear(
    root: u64,
    vaddr: u64,
    count: u64,
    read: &mut ReadFrames<'_>,
) -> Result<u64, String> {
    const GROUP: u64 = FPP * 4096; // virtual bytes of leaves per level-2 entry
    let leaves = count.div_ceil(FPP);
    check_linear_range(vaddr, leaves)?;
    let end = vaddr + leaves * 4096;
    let mut groups = Vec::new();
    let mut va = vaddr;
    while va < end {
        groups.push((va, level2_entry(root, va, read)?));
        va = (va & !(GROUP - 1)) + GROUP;
    }
    let mut saved = (0usize, 0u64);
    for (i, &(_, mfn)) in groups.iter().enumerate() {
        if mfn != saved.1 {
            saved = (i, mfn);
        }
    }
    if saved.0 == 0 || saved.0 + 1 == groups.len() {
        return Ok(count);
    }
    let kept_leaves = (groups[saved.0].0 - vaddr) / 4096;
    Ok(count.min(kept_leaves * FPP))
}

/// The linear list's virtual range must be the guest's own.
fn check_linear_range(vaddr: u64, leaves: u64) -> Result<(), String> {
    let end = vaddr
        .checked_add(leaves * 4096 - 1)
        .ok_or_else(|| format!("linear P2M at {vaddr:#x} wraps around"))?;
    if !canonical(vaddr)
        || !canonical(end)
        || (vaddr <= HYPERVISOR_VIRT_END && end >= HYPERVISOR_VIRT_START)
    {
        return Err(format!(
            "linear P2M range {vaddr:#x}-{end:#x} is not a guest address range"
        ));
    }
    Ok(())
}

/// The frame of the level-2 entry mapping `va` (the level-1 table).
fn level2_entry(root: u64, va: u64, read: &mut ReadFrames<'_>) -> Result<u64, String> {
    let mut table = root;
    for level in (2..=4u32).rev() {
        let page = read(&[table])?;
        let pte = u64_at(&page, ((va >> (12 + 9 * (level - 1))) & 511) as usize);
        if pte & PTE_PRESENT == 0 {
            return Err(format!(
                "linear P2M: vaddr {va:#x} not mapped at level {level} (table mfn {table:#x})"
            ));
        }
        if level > 2 && pte & PTE_PSE != 0 {
            return Err(format!(
                "linear P2M: vaddr {va:#x} mapped by a superpage at level {level}"
            ));
        }
        table = (pte & PTE_FRAME_MASK) >> 12;
    }
    Ok(table)
}

/// Frame-list tree: the frame list list's entries, one per 512×512 pfns;
/// the tree ends with the first of its last run of identical entries.
fn trim_tree(fll: u64, count: u64, read: &mut ReadFrames<'_>) -> Result<u64, String> {
    let fl_count = (count - 1) / (FPP * FPP) + 1;
    if fll == 0 || fl_count > FPP {
        return Ok(count); // tree_leaves says what is wrong
    }
    let top = read(&[fll])?;
    let mut saved = (0u64, 0u64);
    for x in 0..fl_count {
        let m = u64_at(&top, x as usize);
        if m != saved.1 {
            saved = (x, m);
        }
    }
    Ok(count.min((saved.0 + 1) * FPP * FPP))
}

/// Walks the guest's 4-level page tables from `root` for each leaf page of
/// the linear list at `vaddr`.
fn linear_leaves(
    root: u64,
    vaddr: u64,
    leaves: u64,
    read: &mut ReadFrames<'_>,
) -> Result<Vec<u64>, String> {
    check_linear_range(vaddr, leaves)?;
    let mut tables: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut out = Vec::with_capacity(leaves as usize);
    for i in 0..leaves {
        let va = vaddr + i * 4096;
        let mut table = root;
        for level in (1..=4u32).rev() {
            let page = match tables.entry(table) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(read(&[table])?),
            };
            let idx = ((va >> (12 + 9 * (level - 1))) & 511) as usize;
            let pte = u64_at(page, idx);
            if pte & PTE_PRESENT == 0 {
                return Err(format!(
                    "linear P2M: vaddr {va:#x} not mapped at level {level} (table mfn {table:#x})"
                ));
            }
            if level > 1 && pte & PTE_PSE != 0 {
                return Err(format!(
                    "linear P2M: vaddr {va:#x} mapped by a superpage at level {level}"
                ));
            }
            table = (pte & PTE_FRAME_MASK) >> 12;
        }
        out.push(table);
    }
    Ok(out)
}

/// Follows frame list list → frame lists → leaf mfns.
fn tree_leaves(
    fll: u64,
    count: u64,
    leaves: u64,
    read: &mut ReadFrames<'_>,
) -> Result<Vec<u64>, String> {
    if fll == 0 {
        return Err(
            "the guest publishes no P2M (p2m_cr3 and pfn_to_mfn_frame_list_list are 0)".into(),
        );
    }
    let fl_count = (count - 1) / (FPP * FPP) + 1;
    if fl_count > FPP {
        return Err(format!("max_pfn {count:#x} too large for a P2M tree"));
    }
    let top = read(&[fll])?;
    let fls: Vec<u64> = (0..fl_count as usize).map(|i| u64_at(&top, i)).collect();
    if let Some((i, _)) = fls
        .iter()
        .enumerate()
        .find(|(_, &m)| m == 0 || m == u64::MAX)
    {
        return Err(format!("P2M frame list list entry {i} is empty"));
    }
    let mids = read(&fls)?;
    let out: Vec<u64> = (0..leaves as usize).map(|i| u64_at(&mids, i)).collect();
    if let Some((i, _)) = out
        .iter()
        .enumerate()
        .find(|(_, &m)| m == 0 || m == u64::MAX)
    {
        return Err(format!("P2M frame list entry {i} is empty"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guest memory by mfn.
    #[derive(Default)]
    struct Mem(HashMap<u64, Vec<u8>>);

    impl Mem {
        fn put(&mut self, mfn: u64, i: usize, v: u64) {
            let p = self.0.entry(mfn).or_insert_with(|| vec![0; 4096]);
            p[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        fn reader(&self) -> impl FnMut(&[u64]) -> Result<Vec<u8>, String> + '_ {
            move |mfns: &[u64]| {
                let mut v = Vec::new();
                for m in mfns {
                    v.extend_from_slice(
                        self.0
                            .get(m)
                            .ok_or_else(|| format!("mfn {m:#x} not mapped"))?,
                    );
                }
                Ok(v)
            }
        }
    }

    fn si(count: u64, fll: u64, cr3: u64, vaddr: u64) -> Vec<u8> {
        let mut s = vec![0u8; 4096];
        shared_info::set_max_pfn(&mut s, count);
        shared_info::set_frame_list_list(&mut s, fll);
        shared_info::set_p2m_cr3(&mut s, cr3);
        shared_info::set_p2m_vaddr(&mut s, vaddr);
        s
    }

    /// 1100 pfns (3 leaves); pfn p lives at mfn 0x10000 + 3p, pfn 1099 ballooned out.
    fn fill_leaves(m: &mut Mem, leaves: &[u64]) {
        for p in 0..1100u64 {
            let v = if p == 1099 { u64::MAX } else { 0x10000 + 3 * p };
            m.put(leaves[(p / 512) as usize], (p % 512) as usize, v);
        }
    }

    fn check(r: &RawP2m, leaves: &[u64]) {
        assert_eq!(r.p2m.len(), 1100);
        assert_eq!(r.p2m[0], 0x10000);
        assert_eq!(r.p2m[600], 0x10000 + 1800);
        assert_eq!(r.p2m[1099], u64::MAX);
        assert_eq!(r.leaf_mfns, leaves);
    }

    #[test]
    fn linear_list_is_found_through_the_guest_page_tables() {
        let mut m = Mem::default();
        let leaves = [0x501, 0x502, 0x503];
        fill_leaves(&mut m, &leaves);
        // vaddr in the direct-map-free kernel area; the list straddles an
        // L1 boundary so two L1 tables are walked.
        let va = 0xffff_c900_0000_0000u64 + 511 * 4096;
        let (l4, l3, l2, l1a, l1b) = (0x100, 0x101, 0x102, 0x103, 0x104);
        let idx = |va: u64, lvl: u32| ((va >> (12 + 9 * (lvl - 1))) & 511) as usize;
        m.put(l4, idx(va, 4), l3 << 12 | 0x67);
        m.put(l3, idx(va, 3), l2 << 12 | 0x67);
        m.put(l2, idx(va, 2), l1a << 12 | 0x67);
        m.put(l2, idx(va, 2) + 1, l1b << 12 | 0x67);
        m.put(l1a, 511, leaves[0] << 12 | 0x65);
        m.put(l1b, 0, leaves[1] << 12 | 0x65);
        m.put(l1b, 1, leaves[2] << 12 | 0x65);
        let r = read(&si(1100, 0, l4 << 12, va), &mut m.reader()).unwrap();
        check(&r, &leaves);
    }

    #[test]
    fn frame_list_tree_is_used_without_a_linear_list() {
        let mut m = Mem::default();
        let leaves = [0x601, 0x602, 0x603];
        fill_leaves(&mut m, &leaves);
        m.put(0x700, 0, 0x701); // fll → one frame list
        for (i, l) in leaves.iter().enumerate() {
            m.put(0x701, i, *l);
        }
        let r = read(&si(1100, 0x700, 0, 0), &mut m.reader()).unwrap();
        check(&r, &leaves);
    }

    #[test]
    fn a_linear_list_with_a_missing_tail_is_cut_as_xen_cuts_it() {
        // max_pfn claims 4 GiB of pfns (2048 leaves, 4 level-2 entries);
        // entries 1..3 all point at the same "missing" L1 table.
        let mut m = Mem::default();
        let va = 0xffff_c900_0000_0000u64;
        let (l4, l3, l2, l1, missing) = (0x100, 0x101, 0x102, 0x103, 0x1ff);
        let idx = |va: u64, lvl: u32| ((va >> (12 + 9 * (lvl - 1))) & 511) as usize;
        m.put(l4, idx(va, 4), l3 << 12 | 0x67);
        m.put(l3, idx(va, 3), l2 << 12 | 0x67);
        m.put(l2, idx(va, 2), l1 << 12 | 0x67);
        for g in 1..4 {
            m.put(l2, idx(va, 2) + g, missing << 12 | 0x67);
        }
        let leaves: Vec<u64> = (0..512).map(|i| 0x1000 + i).collect();
        for (i, l) in leaves.iter().enumerate() {
            m.put(l1, i, l << 12 | 0x65);
            m.put(*l, 0, 0x20000 + i as u64);
        }
        m.put(missing, 0, 0x5ff << 12 | 0x65);
        m.put(0x5ff, 0, u64::MAX);
        let r = read(&si(4 * 512 * 512, 0, l4 << 12, va), &mut m.reader()).unwrap();
        assert_eq!(r.p2m.len(), 512 * 512);
        assert_eq!(r.leaf_mfns, leaves);
        assert_eq!(r.p2m[512], 0x20001);
        // A single different last entry is kept (Xen's rule).
        m.put(l2, idx(va, 2) + 3, l1 << 12 | 0x67);
        assert_eq!(
            trim_linear(l4, va, 4 * 512 * 512, &mut m.reader()).unwrap(),
            4 * 512 * 512
        );
    }

    #[test]
    fn a_tree_with_a_missing_tail_keeps_the_first_repeated_entry() {
        let mut m = Mem::default();
        m.put(0x700, 0, 0x701);
        m.put(0x700, 1, 0x7ff);
        m.put(0x700, 2, 0x7ff);
        m.put(0x700, 3, 0x7ff);
        assert_eq!(
            trim_tree(0x700, 4 * 512 * 512, &mut m.reader()).unwrap(),
            2 * 512 * 512
        );
        // all different: nothing to cut; and a short P2M stays as it is
        m.put(0x700, 3, 0x702);
        assert_eq!(
            trim_tree(0x700, 4 * 512 * 512, &mut m.reader()).unwrap(),
            4 * 512 * 512
        );
        assert_eq!(trim_tree(0x700, 1100, &mut m.reader()).unwrap(), 1100);
    }

    #[test]
    fn unmapped_linear_list_is_an_error_naming_the_address() {
        let mut m = Mem::default();
        m.put(0x100, 0, 0); // empty L4
        let e = read(
            &si(10, 0, 0x100 << 12, 0xffff_c900_0000_0000),
            &mut m.reader(),
        )
        .unwrap_err();
        assert!(
            e.contains("0xffffc90000000000") && e.contains("level 4"),
            "{e}"
        );
    }

    #[test]
    fn superpages_and_hypervisor_ranges_are_refused() {
        let mut m = Mem::default();
        let va = 0xffff_c900_0000_0000u64;
        m.put(0x100, ((va >> 39) & 511) as usize, 0x101 << 12 | 0x67);
        m.put(0x101, ((va >> 30) & 511) as usize, 0x102 << 12 | 0xE7); // PSE
        let e = read(&si(10, 0, 0x100 << 12, va), &mut m.reader()).unwrap_err();
        assert!(e.contains("superpage"), "{e}");
        let e = read(
            &si(10, 0, 0x100 << 12, 0xffff_8000_0000_0000),
            &mut m.reader(),
        )
        .unwrap_err();
        assert!(e.contains("not a guest address range"), "{e}");
    }

    #[test]
    fn no_p2m_at_all_is_reported() {
        let m = Mem::default();
        let e = read(&si(10, 0, 0, 0), &mut m.reader()).unwrap_err();
        assert!(e.contains("publishes no P2M"), "{e}");
        let e = read(&si(0, 0, 0, 0), &mut m.reader()).unwrap_err();
        assert!(e.contains("max_pfn"), "{e}");
    }
}
