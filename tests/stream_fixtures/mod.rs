//! Hand-built PV and HVM streams in Xen's record order (docs/REFERENCE.md §6.1),
//! assembled byte by byte from the layout tables of the reference, without
//! the library's encoder, so that tests can hold the library to them.
#![allow(dead_code)]

use rxmigrate::stream::{
    hvm_context, DomainHeader, DomainType, LibxlRecord, PageData, PageType, PfnEntry, Record,
    TscInfo, VcpuRecord,
};

/// A byte builder for the reference's tables.
#[derive(Default)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u16be(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32be(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64be(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    /// A record: type, body_length, body, zero padding to 8.
    pub fn record(&mut self, rtype: u32, body: &[u8]) -> &mut Self {
        self.u32(rtype).u32(body.len() as u32).raw(body);
        let pad = (8 - body.len() % 8) % 8;
        self.raw(&[0; 8][..pad])
    }
}

/// Image header (BE) + domain header (LE), docs/REFERENCE.md §4.2 and §4.3.
pub fn libxc_headers(version: u32, dtype: u32) -> Vec<u8> {
    let mut b = Bytes::default();
    b.u64be(0xFFFF_FFFF_FFFF_FFFF)
        .u32be(0x5845_4E46)
        .u32be(version)
        .u16be(0)
        .u16be(0)
        .u32be(0);
    b.u32(dtype).u16(12).u16(0).u32(4).u32(17);
    b.0
}

pub fn header(dt: DomainType) -> DomainHeader {
    DomainHeader {
        domain_type: dt,
        page_shift: 12,
        xen_major: 4,
        xen_minor: 17,
    }
}

/// A page whose bytes depend on the pfn, so that misplaced pages show.
pub fn page(pfn: u64) -> Vec<u8> {
    (0..4096u32)
        .map(|i| (pfn as u32).wrapping_mul(31).wrapping_add(i).to_le_bytes()[0] ^ (i >> 8) as u8)
        .collect()
}

pub fn page_data(entries: &[(u64, u8)]) -> Record {
    let entries: Vec<PfnEntry> = entries
        .iter()
        .map(|&(pfn, t)| PfnEntry {
            pfn,
            ty: PageType(t),
        })
        .collect();
    let mut data = Vec::new();
    for e in &entries {
        if e.ty.has_data() {
            data.extend_from_slice(&page(e.pfn));
        }
    }
    Record::PageData(PageData { entries, data })
}

/// PAGE_DATA body per §1.6.
fn page_data_body(entries: &[(u64, u8)]) -> Vec<u8> {
    let mut b = Bytes::default();
    b.u32(entries.len() as u32).u32(0);
    for &(pfn, t) in entries {
        b.u64(((t as u64) << 60) | pfn);
    }
    for &(pfn, t) in entries {
        if matches!(t, 0..=4 | 9..=12) {
            b.raw(&page(pfn));
        }
    }
    b.0
}

fn cpuid_policy() -> Vec<u8> {
    let mut b = Bytes::default();
    for (leaf, sub) in [(0u32, 0xFFFF_FFFFu32), (1, 0xFFFF_FFFF), (7, 0)] {
        b.u32(leaf)
            .u32(sub)
            .u32(0x11 + leaf)
            .u32(0x22)
            .u32(0x33)
            .u32(0x44);
    }
    b.0
}

fn msr_policy() -> Vec<u8> {
    let mut b = Bytes::default();
    b.u32(0xCE).u32(0).u64(0x8000_0000);
    b.u32(0x10A).u32(0).u64(0x1234);
    b.0
}

fn blob(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
}

pub const TSC: TscInfo = TscInfo {
    mode: 0,
    khz: 2_400_000,
    nsec: 123_456_789_012,
    incarnation: 3,
};

fn tsc_body() -> Vec<u8> {
    let mut b = Bytes::default();
    b.u32(TSC.mode)
        .u32(TSC.khz)
        .u64(TSC.nsec)
        .u32(TSC.incarnation)
        .u32(0);
    b.0
}

/// PV page batches: pfns 0..=0x7ff exist (P2M end 0x7ff, 64-bit guest,
/// 512 entries per P2M frame => 4 frames).
pub const PV_BATCHES: &[&[(u64, u8)]] = &[
    &[
        (0, 0),
        (1, 0),
        (2, 0xC),
        (3, 0x9),
        (4, 0xA),
        (5, 0xB),
        (6, 0xF),
        (7, 0xD),
        (8, 0xE),
    ],
    &[(0x7fe, 0), (0x7ff, 1), (0x100, 2), (0x101, 3), (0x102, 4)],
    &[(0x200, 0xF)],
];

/// The PV stream's records, as the reader must return them.
pub fn pv_records() -> Vec<Record> {
    let mut v = vec![
        Record::X86PvInfo {
            guest_width: 8,
            pt_levels: 4,
        },
        Record::X86CpuidPolicy(cpuid_policy()),
        Record::X86MsrPolicy(msr_policy()),
        Record::StaticDataEnd,
        Record::X86PvP2mFrames {
            start_pfn: 0,
            end_pfn: 0x7ff,
            frames: vec![0x10, 0x11, 0x12, 0x13],
        },
    ];
    v.extend(PV_BATCHES.iter().map(|b| page_data(b)));
    v.push(Record::X86TscInfo(TSC));
    v.push(Record::SharedInfo(blob(4096, 0x5a)));
    for vcpu in 0..2u32 {
        let vr = |len, seed| VcpuRecord {
            vcpu_id: vcpu,
            blob: blob(len, seed),
        };
        v.push(Record::X86PvVcpuBasic(vr(5168, 1 + vcpu as u8)));
        v.push(Record::X86PvVcpuExtended(vr(64, 2)));
        v.push(Record::X86PvVcpuXsave(vr(16 + 576, 3)));
        v.push(Record::X86PvVcpuMsrs(vr(32, 4)));
    }
    v.push(Record::End);
    v
}

/// The PV stream, byte by byte.
pub fn pv_bytes() -> Vec<u8> {
    let mut b = Bytes(libxc_headers(3, 1));
    b.record(0x02, &[8, 4, 0, 0, 0, 0, 0, 0]);
    b.record(0x11, &cpuid_policy());
    b.record(0x12, &msr_policy());
    b.record(0x10, &[]);
    let mut p2m = Bytes::default();
    p2m.u32(0)
        .u32(0x7ff)
        .u64(0x10)
        .u64(0x11)
        .u64(0x12)
        .u64(0x13);
    b.record(0x03, &p2m.0);
    for batch in PV_BATCHES {
        b.record(0x01, &page_data_body(batch));
    }
    b.record(0x08, &tsc_body());
    b.record(0x07, &blob(4096, 0x5a));
    for vcpu in 0..2u32 {
        for (rtype, len, seed) in [
            (0x04, 5168, 1 + vcpu as u8),
            (0x05, 64, 2),
            (0x06, 16 + 576, 3),
            (0x0C, 32, 4),
        ] {
            let mut body = Bytes::default();
            body.u32(vcpu).u32(0).raw(&blob(len, seed));
            b.record(rtype, &body.0);
        }
    }
    b.record(0x00, &[]);
    b.0
}

/// HVM page batches: any pfn is valid.
pub const HVM_BATCHES: &[&[(u64, u8)]] = &[
    &[(0, 0), (1, 0), (2, 0), (0xfeff0, 0)],
    &[(0xa0, 0xF), (0xa1, 0xF), (0x100000, 0)],
    &[(0xfeffc, 0), (0xfeffd, 0)],
];

/// A realistic HVM context blob: HEADER, one CPU, a few devices, END.
pub fn hvm_context_blob() -> Vec<u8> {
    let mut b = Bytes::default();
    // HEADER: magic, version 1, changeset, cpuid, gtsc_khz (24 bytes).
    b.u16(1).u16(0).u32(24);
    b.u32(0x5438_1286)
        .u32(1)
        .u64(0)
        .u32(0x000806ec)
        .u32(2_400_000);
    for (code, instance, len) in [
        (2u16, 0u16, 1024usize),
        (3, 0, 8),
        (3, 1, 8),
        (4, 0, 216),
        (5, 0, 24),
        (6, 0, 1024),
        (14, 0, 488),
    ] {
        b.u16(code).u16(instance).u32(len as u32);
        b.raw(&blob(len, code as u8));
    }
    b.u16(0).u16(0).u32(0);
    b.0
}

pub const HVM_PARAMS: &[(u64, u64)] = &[
    (1, 0xfeffc),
    (5, 0xfeff0),
    (6, 0xfeff1),
    (17, 0xfeffd),
    (36, 0),
];

pub fn hvm_records() -> Vec<Record> {
    let mut v = vec![
        Record::X86CpuidPolicy(cpuid_policy()),
        Record::X86MsrPolicy(msr_policy()),
        Record::StaticDataEnd,
    ];
    v.extend(HVM_BATCHES.iter().map(|b| page_data(b)));
    v.push(Record::X86TscInfo(TSC));
    v.push(Record::HvmContext(hvm_context_blob()));
    v.push(Record::HvmParams(HVM_PARAMS.to_vec()));
    v.push(Record::End);
    v
}

pub fn hvm_bytes() -> Vec<u8> {
    let mut b = Bytes(libxc_headers(3, 2));
    b.record(0x11, &cpuid_policy());
    b.record(0x12, &msr_policy());
    b.record(0x10, &[]);
    for batch in HVM_BATCHES {
        b.record(0x01, &page_data_body(batch));
    }
    b.record(0x08, &tsc_body());
    b.record(0x09, &hvm_context_blob());
    let mut params = Bytes::default();
    params.u32(HVM_PARAMS.len() as u32).u32(0);
    for &(i, v) in HVM_PARAMS {
        params.u64(i).u64(v);
    }
    b.record(0x0A, &params.0);
    b.record(0x00, &[]);
    b.0
}

pub const CONFIG_JSON: &[u8] =
    br#"{"c_info": {"type": "hvm", "name": "guest"}, "b_info": {"max_memkb": 131072}}"#;

/// xl header (§2.1) with the config above.
pub fn xl_header_bytes(config: Option<&[u8]>) -> Vec<u8> {
    let mut b = Bytes::default();
    b.raw(b"Xen saved domain, xl format\n \0 \r");
    let (flags, opt_len) = match config {
        Some(c) => (3u32, 4 + c.len() as u32 + 1),
        None => (2u32, 4),
    };
    b.u32(0x0102_0304).u32(flags).u32(0).u32(opt_len);
    match config {
        Some(c) => {
            b.u32(c.len() as u32 + 1).raw(c).u8(0);
        }
        None => {
            b.u32(0);
        }
    }
    b.0
}

pub fn libxl_header_bytes() -> Vec<u8> {
    let mut b = Bytes::default();
    b.u64be(0x4C69_6278_6C46_6D74).u32be(2).u32be(0);
    b.0
}

pub fn xenstore_pairs() -> Vec<(String, String)> {
    vec![
        ("physmap/f0000000/start_addr".into(), "f0000000".into()),
        ("physmap/f0000000/size".into(), "800000".into()),
        ("physmap/f0000000/name".into(), "vga.vram".into()),
    ]
}

/// The libxl records that follow the libxc stream of an HVM guest.
pub fn hvm_tail(with_xenstore: bool) -> Vec<LibxlRecord> {
    let mut v = Vec::new();
    if with_xenstore {
        v.push(LibxlRecord::EmulatorXenstoreData {
            emulator_id: 2,
            index: 0,
            pairs: xenstore_pairs(),
        });
    }
    v.push(LibxlRecord::EmulatorContext {
        emulator_id: 2,
        index: 0,
        blob: blob(1234, 9),
    });
    v.push(LibxlRecord::End);
    v
}

/// The bytes of [`hvm_tail`].
pub fn hvm_tail_bytes(with_xenstore: bool) -> Vec<u8> {
    let mut b = Bytes::default();
    if with_xenstore {
        let mut body = Bytes::default();
        body.u32(2).u32(0);
        for (k, v) in xenstore_pairs() {
            body.raw(k.as_bytes()).u8(0).raw(v.as_bytes()).u8(0);
        }
        b.record(2, &body.0);
    }
    let mut ctx = Bytes::default();
    ctx.u32(2).u32(0).raw(&blob(1234, 9));
    b.record(3, &ctx.0);
    b.record(0, &[]);
    b.0
}

/// A whole xl save file: xl header, libxl header, LIBXC_CONTEXT, the libxc
/// stream, then (HVM) the emulator records and END.
pub fn xl_file(libxc: &[u8], hvm: bool, with_xenstore: bool) -> Vec<u8> {
    let mut b = Bytes(xl_header_bytes(Some(CONFIG_JSON)));
    b.raw(&libxl_header_bytes());
    b.record(1, &[]);
    b.raw(libxc);
    if hvm {
        b.raw(&hvm_tail_bytes(with_xenstore));
    } else {
        b.record(0, &[]);
    }
    b.0
}

/// Parses the fixture's HVM context with the library (sanity for tests).
pub fn hvm_context_entries() -> Vec<hvm_context::Entry> {
    hvm_context::parse(&hvm_context_blob()).expect("fixture blob parses")
}
