//! Hostile streams of the classes of issue 12, from a seed: each case is a
//! saved PV or HVM image with one kind of damage, and what must come of it.
//!
//! Every class but `Flip` must end in a clear error; the streams whose
//! damage is only a cost (floods of records or entries) are cut after the
//! damage, so that the cost is paid and the outcome is certain. `Flip`
//! changes bytes inside ordinary guest pages only: the restore must succeed
//! and the guest must hold exactly the changed pages.

use super::*;
use rxmigrate::hv::GuestType;

/// One of the values, chosen by `rng` (the values are computed first).
macro_rules! pick {
    ($rng:expr, [$($x:expr),* $(,)?]) => {{
        let xs = [$($x),*];
        $rng.pick(&xs)
    }};
}

/// The damage a case does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Counts that lie or are huge (PAGE_DATA, HVM_PARAMS; floods of entries).
    Count,
    /// Record and header lengths.
    Length,
    /// Pfns beyond the guest or the format.
    Pfn,
    /// The P2M's end_pfn (PV) / HVM params naming pfns (HVM).
    EndPfn,
    /// vCPU ids beyond the guest's.
    VcpuId,
    /// Many small records raising the top pfn (or populating, PV).
    Raising,
    /// Oversized or malformed xl configs.
    Config,
    /// Oversized or too many device-model records after the libxc stream.
    Emulator,
    /// The stream cut short.
    Truncate,
    /// Bytes flipped inside guest pages: harmless.
    Flip,
}

pub const CLASSES: [Class; 10] = [
    Class::Count,
    Class::Length,
    Class::Pfn,
    Class::EndPfn,
    Class::VcpuId,
    Class::Raising,
    Class::Config,
    Class::Emulator,
    Class::Truncate,
    Class::Flip,
];

/// What must come of a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Error,
    /// A restore whose guest holds these pages (pfn, contents).
    Restored(Vec<(u64, Vec<u8>)>),
}

/// One hostile stream.
pub struct Case {
    pub index: u64,
    pub class: Class,
    pub guest: GuestType,
    pub via: Via,
    /// What was done, for reports.
    pub what: String,
    pub bytes: Vec<u8>,
    pub expect: Expect,
}

/// The images the cases start from.
pub struct Bases {
    pub pv: Image,
    pub hvm: Image,
    /// Guest pages of both.
    pub pages: u64,
}

/// splitmix64.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Uniform in lo..=hi.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    pub fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize].clone()
    }
}

/// The case of index `i`: class, guest and way in cycle through all
/// combinations; the seed is the index.
pub fn case(i: u64, b: &Bases) -> Case {
    let class = CLASSES[(i % CLASSES.len() as u64) as usize];
    let guest = if (i / CLASSES.len() as u64) % 2 == 0 {
        GuestType::Pv
    } else {
        GuestType::Hvm
    };
    let via = if (i / (2 * CLASSES.len() as u64)) % 2 == 0 {
        Via::Restore
    } else {
        Via::Receive
    };
    let mut rng = Rng::new(i.wrapping_mul(0x2545_f491_4f6c_dd1d).wrapping_add(1));
    let mut img = match guest {
        GuestType::Pv => b.pv.clone(),
        GuestType::Hvm => b.hvm.clone(),
    };
    let pv = guest == GuestType::Pv;
    let (what, bytes, expect) = match class {
        Class::Count => count(&mut rng, &mut img, pv),
        Class::Length => length(&mut rng, &img),
        Class::Pfn => pfn(&mut rng, &mut img, pv, b.pages),
        Class::EndPfn => end_pfn(&mut rng, &mut img, pv, b.pages),
        Class::VcpuId => vcpu_id(&mut rng, &mut img, pv),
        Class::Raising => raising(&mut rng, &mut img, pv, b.pages),
        Class::Config => config(&mut rng, &mut img),
        Class::Emulator => emulator(&mut rng, &mut img),
        Class::Truncate => truncate(&mut rng, &img),
        Class::Flip => flip(&mut rng, &mut img, pv),
    };
    Case {
        index: i,
        class,
        guest,
        via,
        what,
        bytes,
        expect,
    }
}

type Made = (String, Vec<u8>, Expect);

fn err(what: String, img: &Image) -> Made {
    (what, img.bytes(), Expect::Error)
}

/// Cut the libxc stream right after record `i` (the libxl layers stay
/// around it, so the reader meets the libxl trailer where it wants a
/// libxc record).
fn cut_after(img: &mut Image, i: usize) {
    img.records.truncate(i + 1);
}

fn huge_u32(rng: &mut Rng) -> u32 {
    pick!(
        rng,
        [
            u32::MAX,
            u32::MAX - 7,
            1 << 31,
            1 << 27,
            (1 << 27) + 8,
            1 << 20,
            rng.next() as u32,
        ]
    )
}

fn count(rng: &mut Rng, img: &mut Image, pv: bool) -> Made {
    match rng.below(5) {
        4 => {
            // A record Xen writes once, repeated (each costs a host call).
            let kinds: &[u32] = if pv {
                &[0x07, 0x08]
            } else {
                &[0x08, rt::HVM_CONTEXT, rt::HVM_PARAMS]
            };
            let kind = rng.pick(kinds);
            let r = img.find(kind).expect("record of that kind");
            let n = rng.range(65, 100_000) as usize;
            let rec = img.records[r].clone();
            img.records
                .splice(r..r, std::iter::repeat_n(rec, n))
                .for_each(drop);
            err(format!("record type {kind:#x} repeated {n} times"), img)
        }
        0 => {
            // A PAGE_DATA count that disagrees with the length.
            let recs: Vec<usize> = (0..img.records.len())
                .filter(|&i| img.records[i].rtype == rt::PAGE_DATA)
                .collect();
            let r = rng.pick(&recs);
            let old = u32_at(&img.records[r].body, 0);
            let new = match rng.below(3) {
                0 => old + rng.range(1, 64) as u32,
                1 => huge_u32(rng).max(old + 1),
                _ => old
                    .saturating_sub(rng.range(1, old.max(2) as u64 - 1) as u32)
                    .max(1),
            };
            img.records[r].body[..4].copy_from_slice(&new.to_le_bytes());
            err(format!("PAGE_DATA #{r} count {old} -> {new}"), img)
        }
        1 if !pv => {
            // An HVM_PARAMS count that disagrees with the length.
            let r = img.find(rt::HVM_PARAMS).expect("params");
            let new = huge_u32(rng);
            img.records[r].body[..4].copy_from_slice(&new.to_le_bytes());
            err(format!("HVM_PARAMS count -> {new}"), img)
        }
        2 if !pv => {
            // A flood of HVM params, then the stream ends.
            let n = rng.range(1000, 200_000) as usize;
            let idx = pick!(rng, [36u64, 9, 1 << 20, rng.next()]);
            let params: Vec<(u64, u64)> = (0..n).map(|k| (idx, k as u64)).collect();
            let r = img.find(rt::HVM_PARAMS).expect("params");
            img.records
                .insert(r, Rec::new(rt::HVM_PARAMS, hvm_params_body(&params)));
            cut_after(img, r);
            err(format!("{n} HVM params of index {idx:#x}, cut"), img)
        }
        _ => {
            // One PAGE_DATA of many XALLOC entries (no page data), distinct
            // pfns where the guest is made big enough, then the stream ends.
            let n = rng.range(100_000, 1_200_000);
            let first = img.find(rt::PAGE_DATA).expect("page data");
            let entries: Vec<(u64, u8)> = if pv {
                let top = 4095;
                (0..n).map(|k| (k % (top + 1), XALLOC)).collect()
            } else {
                let mut cfg = img.config_json();
                cfg["b_info"]["max_memkb"] = ((n + 8192) * 4).into();
                img.set_config_json(&cfg);
                (0..n).map(|k| (4096 + k, XALLOC)).collect()
            };
            img.records
                .insert(first, Rec::new(rt::PAGE_DATA, page_data_nodata(entries)));
            cut_after(img, first);
            err(format!("PAGE_DATA of {n} XALLOC entries, cut"), img)
        }
    }
}

fn length(rng: &mut Rng, img: &Image) -> Made {
    let (mut bytes, headers) = img.bytes_and_headers();
    let (at, layer) = rng.pick(&headers);
    // The u32 length of a record header is 4 bytes in; the xl header's
    // optional data length is a field of its own.
    let field = at + 4;
    let old = u32_at(&bytes, field);
    let new = match rng.below(4) {
        0 => huge_u32(rng),
        1 => old.wrapping_add(8 * rng.range(1, 512) as u32),
        2 => old.wrapping_sub(8 * rng.range(1, 4) as u32),
        _ => old ^ (1 << rng.below(32)),
    };
    let new = if new == old { old ^ 0x8000_0000 } else { new };
    bytes[field..field + 4].copy_from_slice(&new.to_le_bytes());
    (
        format!("{layer} header at {at:#x}: length {old} -> {new}"),
        bytes,
        Expect::Error,
    )
}

/// Entries that populate (data pages and XALLOC): their pfn matters.
fn populating(img: &Image) -> Vec<PageRef> {
    img.pages()
        .into_iter()
        .filter(|p| p.data_at.is_some() || p.ty == XALLOC)
        .collect()
}

fn set_entry_pfn(img: &mut Image, p: &PageRef, pfn: u64) {
    let body = &mut img.records[p.record].body;
    let count = u32_at(body, 0) as usize;
    for k in 0..count {
        let at = 8 + 8 * k;
        let raw = u64::from_le_bytes(body[at..at + 8].try_into().expect("8"));
        if raw & 0x000f_ffff_ffff_ffff == p.pfn {
            let new = (raw & !0x000f_ffff_ffff_ffff) | (pfn & 0x000f_ffff_ffff_ffff);
            body[at..at + 8].copy_from_slice(&new.to_le_bytes());
            return;
        }
    }
    panic!("pfn {:#x} not in record {}", p.pfn, p.record);
}

fn pfn(rng: &mut Rng, img: &mut Image, pv: bool, pages: u64) -> Made {
    let p = rng.pick(&populating(img));
    let beyond = pick!(
        rng,
        [
            (1u64 << 52) - 1,
            1 << 40,
            0xFFFF_FFFF,
            1 << 28,
            // Just beyond the guest: for PV beyond its P2M; for HVM beyond
            // the pfns the receiver lets it populate (its RAM may sit above
            // a hole, so a pfn just past its RAM is legitimate, as on Xen).
            if pv {
                pages
            } else {
                rxmigrate::restore::Limits::hvm_pfn_cap(pages) + 1
            } + rng.below(16),
            pages + (4 << 18) + rng.below(1 << 20),
            (2 << 20) + rng.below(16),
        ]
    );
    set_entry_pfn(img, &p, beyond);
    let g = if pv { "PV" } else { "HVM" };
    err(
        format!("{g} PAGE_DATA pfn {:#x} -> {beyond:#x}", p.pfn),
        img,
    )
}

fn end_pfn(rng: &mut Rng, img: &mut Image, pv: bool, pages: u64) -> Made {
    if !pv {
        // HVM params that name pfns (rings the restore zeroes).
        let r = img.find(rt::HVM_PARAMS).expect("params");
        let idx = pick!(rng, [1u64, 5, 6, 17]);
        let val = pick!(
            rng,
            [
                u64::MAX,
                1 << 40,
                1 << 28,
                pages + rng.below(64),
                (2 << 20) + rng.below(64),
            ]
        );
        let params: Vec<(u64, u64)> = img
            .hvm_params()
            .into_iter()
            .map(|(k, v)| if k == idx { (k, val) } else { (k, v) })
            .collect();
        img.records[r].body = hvm_params_body(&params);
        return err(format!("HVM param {idx} -> {val:#x}"), img);
    }
    let keep_config = rng.below(3) == 0;
    if !keep_config {
        let mut cfg = img.config_json();
        if let Some(b) = cfg["b_info"].as_object_mut() {
            b.remove("max_memkb");
        }
        img.set_config_json(&cfg);
    }
    let end: u32 = pick!(
        rng,
        [
            u32::MAX,
            (1 << 30) + rng.below(1 << 20) as u32,
            (1 << 24) + rng.below(1 << 20) as u32,
            pages as u32 + rng.below(1 << 16) as u32,
        ]
    );
    let r = img.find(rt::X86_PV_P2M_FRAMES).expect("P2M");
    let frames = u64::from(end) / 512 + 1;
    let mut body = Vec::with_capacity(8 + 8 * frames as usize);
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&end.to_le_bytes());
    for f in 0..frames {
        body.extend_from_slice(&(4 + f % 8).to_le_bytes());
    }
    img.records[r].body = body;
    cut_after(img, r);
    err(
        format!("P2M end_pfn -> {end:#x} (config max_memkb kept: {keep_config}), cut"),
        img,
    )
}

fn vcpu_id(rng: &mut Rng, img: &mut Image, pv: bool) -> Made {
    if !pv {
        // The CPU entry of the HVM context names a vCPU the guest lacks.
        let r = img.find(rt::HVM_CONTEXT).expect("context");
        let id = pick!(rng, [1u16, 100, u16::MAX, rng.range(2, 0xfffe) as u16]);
        let body = &mut img.records[r].body;
        let mut at = 0;
        while at + 8 <= body.len() {
            let code = u16::from_le_bytes([body[at], body[at + 1]]);
            let len = u32_at(body, at + 4) as usize;
            if code == 2 {
                body[at + 2..at + 4].copy_from_slice(&id.to_le_bytes());
                break;
            }
            at += 8 + len;
        }
        return err(format!("HVM context CPU instance -> {id}"), img);
    }
    if rng.below(2) == 0 {
        let recs: Vec<usize> = (0..img.records.len())
            .filter(|&i| matches!(img.records[i].rtype, 0x04..=0x06 | 0x0C))
            .collect();
        let r = rng.pick(&recs);
        let id = pick!(
            rng,
            [1u32, 100, u32::MAX, rng.range(2, u32::MAX as u64) as u32]
        );
        img.records[r].body[..4].copy_from_slice(&id.to_le_bytes());
        err(format!("vCPU record #{r} id -> {id}"), img)
    } else {
        let n = rng.range(1, 500);
        let size = pick!(rng, [16usize, 4096, 64 << 10]);
        let blob = vec![0x5a; size];
        let first = rng.range(1, 1 << 20) as u32;
        img.insert_before_end(
            (0..n as u32).map(|k| Rec::new(rt::X86_PV_VCPU_XSAVE, vcpu_body(first + k, &blob))),
        );
        err(
            format!("{n} XSAVE records of {size} bytes from vCPU {first}"),
            img,
        )
    }
}

fn raising(rng: &mut Rng, img: &mut Image, pv: bool, pages: u64) -> Made {
    let n = rng.range(1000, 8000);
    let first = img.find(rt::PAGE_DATA).expect("page data");
    let recs: Vec<Rec> = if pv {
        // Within the guest: each record populates one more pfn.
        (0..n)
            .map(|_| Rec::new(rt::PAGE_DATA, page_data_nodata([(rng.below(4096), XALLOC)])))
            .collect()
    } else {
        // XTAB entries populate nothing but raise the top pfn, slowly
        // within what the guest may grow to, or fast beyond it.
        let step = pick!(rng, [1u64, 64, 1 << 16]);
        (0..n)
            .map(|k| Rec::new(rt::PAGE_DATA, page_data_nodata([(pages + k * step, 0xF)])))
            .collect()
    };
    let at = first + 1;
    let tail = img.records.split_off(at);
    img.records.extend(recs);
    let cut = img.records.len() - 1;
    img.records.extend(tail);
    cut_after(img, cut);
    err(format!("{n} one-entry PAGE_DATA records, cut"), img)
}

fn config(rng: &mut Rng, img: &mut Image) -> Made {
    let mut cfg = img.config_json();
    let what = match rng.below(5) {
        0 => {
            let n = rng.range((1 << 20) + 1, 40 << 20) as usize;
            cfg["pad"] = "x".repeat(n).into();
            img.set_config_json(&cfg);
            format!("config padded by {n} bytes")
        }
        1 => {
            let depth = rng.range(200, 100_000) as usize;
            let mut text = "[".repeat(depth);
            text.push_str(&"]".repeat(depth));
            img.config = text.into_bytes();
            format!("config nested {depth} deep")
        }
        2 => {
            let n = rng.range(1, 4096) as usize;
            img.config = (0..n).map(|_| rng.range(1, 255) as u8).collect();
            format!("config of {n} random bytes")
        }
        3 => {
            let kb = pick!(rng, [u64::MAX, u64::MAX - 3, 1 << 60, 1 << 42]);
            cfg["b_info"]["max_memkb"] = kb.into();
            img.set_config_json(&cfg);
            format!("config max_memkb {kb}")
        }
        _ => {
            let n = pick!(rng, [u64::MAX, 1 << 32, 129, 4096]);
            cfg["b_info"]["max_vcpus"] = n.into();
            img.set_config_json(&cfg);
            format!("config max_vcpus {n}")
        }
    };
    err(what, img)
}

fn emulator(rng: &mut Rng, img: &mut Image) -> Made {
    let end = Rec::new(lt::END, Vec::new());
    let ctx = Rec::new(lt::EMULATOR_CONTEXT, emulator_body(b"QEVM state"));
    let what = match rng.below(4) {
        0 => {
            let k = rng.range(1, 6);
            let size = rng.range((1 << 20) + 1, 12 << 20) as usize;
            let pairs = b"k\0v\0".repeat(size / 4 + 1);
            img.tail = (0..k)
                .map(|_| Rec::new(lt::EMULATOR_XENSTORE_DATA, emulator_body(&pairs)))
                .chain([ctx, end])
                .collect();
            format!("{k} xenstore records of {size} bytes")
        }
        1 => {
            let k = rng.range(9, 5000);
            img.tail = (0..k)
                .map(|i| {
                    Rec::new(
                        lt::EMULATOR_XENSTORE_DATA,
                        emulator_body(format!("k{i}\0v\0").as_bytes()),
                    )
                })
                .chain([ctx, end])
                .collect();
            format!("{k} small xenstore records")
        }
        2 => {
            let pairs = rng.range(4097, 100_000) as usize;
            let mut data = Vec::new();
            for i in 0..pairs {
                data.extend_from_slice(format!("{i:x}\0\0").as_bytes());
            }
            img.tail = vec![
                Rec::new(lt::EMULATOR_XENSTORE_DATA, emulator_body(&data)),
                ctx,
                end,
            ];
            format!("{pairs} xenstore pairs in one record")
        }
        _ => {
            let size = rng.range((32 << 20) + 1, 48 << 20) as usize;
            img.tail = vec![
                Rec::new(lt::EMULATOR_CONTEXT, emulator_body(&vec![0; size])),
                end,
            ];
            format!("EMULATOR_CONTEXT of {size} bytes")
        }
    };
    err(what, img)
}

fn truncate(rng: &mut Rng, img: &Image) -> Made {
    let mut bytes = img.bytes();
    let at = rng.below(bytes.len() as u64) as usize;
    bytes.truncate(at);
    (format!("cut at {at:#x}"), bytes, Expect::Error)
}

fn flip(rng: &mut Rng, img: &mut Image, pv: bool) -> Made {
    // Ordinary pages the restore hands to the guest untouched: not page
    // tables, not the PV start_info (pfn 0) or P2M frames, not the HVM
    // rings (zeroed).
    let skip: Vec<u64> = if pv {
        let mut s = img.p2m_frames();
        s.push(0);
        s
    } else {
        img.hvm_params().iter().map(|&(_, v)| v).collect()
    };
    let cands: Vec<PageRef> = img
        .pages()
        .into_iter()
        .filter(|p| p.ty == NOTAB && p.data_at.is_some() && !skip.contains(&p.pfn))
        .collect();
    let n = rng.range(1, 8);
    let mut changed: Vec<(u64, Vec<u8>)> = Vec::new();
    for _ in 0..n {
        let p = rng.pick(&cands);
        let at = p.data_at.expect("data");
        let body = &mut img.records[p.record].body;
        for _ in 0..rng.range(1, 16) {
            let o = rng.below(PAGE as u64) as usize;
            body[at + o] ^= rng.range(1, 255) as u8;
        }
        let page = body[at..at + PAGE].to_vec();
        changed.retain(|(q, _)| *q != p.pfn);
        changed.push((p.pfn, page));
    }
    let pfns: Vec<String> = changed.iter().map(|(p, _)| format!("{p:#x}")).collect();
    (
        format!("bytes flipped in pages {}", pfns.join(",")),
        img.bytes(),
        Expect::Restored(changed),
    )
}
