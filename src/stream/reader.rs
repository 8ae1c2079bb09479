//! Streaming reader of the libxc stream. It reads exactly the bytes of each
//! header and record (header, body, padding) and nothing more, so that after
//! END the same input is positioned on whatever follows (libxl's records).

use super::codec::{self, BodyCtx};
use super::error::{invalid, ErrorKind, Layer, Place, StreamError};
use super::limits::{OverLimit, ReadCaps, Unit};
use super::record::{rec_type, DomainHeader, DomainType, PageData, PfnEntry, Record};
use super::rules::Rules;
use super::wire::{self, Fields};
use super::{PAGE_SIZE, REC_LENGTH_MAX};
use std::io::Read;

/// `0xFFFFFFFFFFFFFFFF`: v2+ images start with all ones.
pub const IHDR_MARKER: u64 = u64::MAX;
/// "XENF".
pub const IHDR_ID: u32 = 0x5845_4E46;
/// Image header options bit 0: big-endian stream.
pub const IHDR_OPT_BIG_ENDIAN: u16 = 1;
/// Size of the image header.
pub const IHDR_SIZE: usize = 24;
/// Size of the domain header.
pub const DHDR_SIZE: usize = 16;

/// Most PAGE_DATA entries one record may hold here: the decoded entries
/// (16 bytes each in memory) must stay within the record cap. Xen's saver
/// writes at most 1024.
pub const MAX_READ_PFNS: usize = REC_LENGTH_MAX / std::mem::size_of::<PfnEntry>();

/// How strictly to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Offset of the stream's first byte within the whole input, so that
    /// offsets in errors and [`LibxcReader::offset`] are input offsets.
    pub base_offset: u64,
    /// Also enforce what only Xen's verifier (verify-stream-v2) enforces:
    /// reserved fields zero, no unknown optional records, no
    /// CHECKPOINT_DIRTY_PFN_LIST. The default applies the rules of Xen's
    /// restore (plus zero padding), which ignores reserved fields.
    pub strict: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Records,
    Ended,
    Failed,
}

/// Reader of one libxc stream over any `Read`. It never buffers: wrap the
/// input in a `BufReader` yourself if it is unbuffered and you do not need
/// the input positioned exactly after END.
pub struct LibxcReader<R: Read> {
    inner: R,
    version: u32,
    header: DomainHeader,
    options: u16,
    offset: u64,
    index: u64,
    last_length: u32,
    rules: Rules,
    caps: ReadCaps,
    state: State,
    /// A page buffer handed back by the consumer ([`LibxcReader::recycle`]),
    /// the next PAGE_DATA's data goes into it.
    spare: Vec<u8>,
}

/// The largest page buffer a reader keeps for reuse (a batch of 1024 pages).
const SPARE_MAX: usize = 1024 * PAGE_SIZE;

impl<R: Read> LibxcReader<R> {
    /// Reads and checks the image and domain headers.
    pub fn new(inner: R) -> Result<Self, StreamError> {
        Self::with_options(inner, ReadOptions::default())
    }

    /// As [`LibxcReader::new`], with options.
    pub fn with_options(mut inner: R, opts: ReadOptions) -> Result<Self, StreamError> {
        let at = opts.base_offset;
        let head_err = |what: &'static str, at: u64| {
            move |k: ErrorKind| {
                StreamError::new(Layer::Libxc, k)
                    .with_place(Place::Header(what))
                    .with_offset(at)
            }
        };

        let mut ih = [0u8; IHDR_SIZE];
        wire::read_exact_at(&mut inner, &mut ih, at, true).map_err(head_err("image header", at))?;
        let (version, options) =
            parse_image_header(&ih, opts.strict).map_err(head_err("image header", at))?;

        let dat = at + IHDR_SIZE as u64;
        let mut dh = [0u8; DHDR_SIZE];
        wire::read_exact_at(&mut inner, &mut dh, dat, false)
            .map_err(head_err("domain header", dat))?;
        let header =
            parse_domain_header(&dh, opts.strict).map_err(head_err("domain header", dat))?;

        Ok(LibxcReader {
            inner,
            version,
            options,
            rules: Rules::new(version, header.domain_type, opts.strict),
            header,
            offset: dat + DHDR_SIZE as u64,
            index: 0,
            last_length: 0,
            caps: ReadCaps::default(),
            state: State::Records,
            spare: Vec::new(),
        })
    }

    /// Image format version: 2 or 3.
    pub fn version(&self) -> u32 {
        self.version
    }
    /// Image header options (bit 0 endianness, always 0 here).
    pub fn image_options(&self) -> u16 {
        self.options
    }
    pub fn domain_header(&self) -> &DomainHeader {
        &self.header
    }
    /// Input offset of the next byte to be read (bytes consumed so far, plus
    /// the base offset).
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// Index of the next record (= number of records read so far).
    pub fn record_index(&self) -> u64 {
        self.index
    }
    /// `body_length` of the record last returned.
    pub fn last_record_length(&self) -> u32 {
        self.last_length
    }
    /// Whether the stream is past its static data: STATIC_DATA_END read
    /// (v3), or inferred from the first memory record (v2), by the stream's
    /// ordering rules. A consumer acting at that point asks here rather
    /// than repeating the rule.
    pub fn static_data_ended(&self) -> bool {
        self.rules.static_data_ended()
    }
    /// Whether END has been read.
    pub fn at_end(&self) -> bool {
        self.state == State::Ended
    }
    /// The input, e.g. to read the libxl records a checkpointed stream puts
    /// between a CHECKPOINT and the next libxc record; report what was read
    /// with [`LibxcReader::skip_offset`] to keep offsets right.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
    /// Accounts for `n` bytes the caller read through [`LibxcReader::get_mut`].
    pub fn skip_offset(&mut self, n: u64) {
        self.offset = self.offset.saturating_add(n);
    }
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Caps tighter than the format's for the records still to come (a
    /// restore's, from the guest size the receiver allows): a record over
    /// them is refused from its header, before its body is read.
    pub fn set_caps(&mut self, caps: ReadCaps) {
        self.caps = caps;
    }
    pub fn caps(&self) -> ReadCaps {
        self.caps
    }

    /// Hand back a PAGE_DATA record's `data` once it is used: the next
    /// PAGE_DATA is read into it instead of a fresh allocation.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if buf.capacity() <= SPARE_MAX && buf.capacity() > self.spare.capacity() {
            self.spare = buf;
        }
    }

    /// Next record, fully validated (lengths, padding, ordering, pfn range
    /// once P2M_FRAMES is known). After END has been returned, returns
    /// `Ok(None)` and never reads again. After an error the reader is spent.
    pub fn next_record(&mut self) -> Result<Option<Record>, StreamError> {
        match self.state {
            State::Ended => return Ok(None),
            State::Failed => {
                return Err(StreamError::invalid(
                    Layer::Libxc,
                    "the reader already failed; the stream position is unknown",
                )
                .with_place(Place::Record {
                    index: Some(self.index),
                    rtype: None,
                })
                .with_offset(self.offset))
            }
            State::Records => {}
        }
        let start = self.offset;
        let index = self.index;
        let mut rtype = None;
        let res = self.read_record(start, &mut rtype);
        match res {
            Ok(rec) => {
                self.index += 1;
                if matches!(rec, Record::End) {
                    self.state = State::Ended;
                }
                Ok(Some(rec))
            }
            Err(kind) => {
                self.state = State::Failed;
                Err(StreamError::new(Layer::Libxc, kind)
                    .with_place(Place::Record {
                        index: Some(index),
                        rtype,
                    })
                    .with_offset(start))
            }
        }
    }

    fn read_record(
        &mut self,
        start: u64,
        rtype_out: &mut Option<u32>,
    ) -> Result<Record, ErrorKind> {
        let mut hdr = [0u8; 8];
        wire::read_exact_at(&mut self.inner, &mut hdr, start, true)?;
        self.offset += 8;
        let mut f = Fields::new(&hdr);
        let rtype = f.u32()?;
        let length = f.u32()?;
        *rtype_out = Some(rtype);
        self.last_length = length;
        if length as usize > REC_LENGTH_MAX {
            return Err(invalid(format!(
                "length {length:#x} exceeds the record cap of {REC_LENGTH_MAX:#x} (128 MiB)"
            )));
        }
        self.rules.admit(rtype)?;
        let body_at = start + 8;
        let known = rtype <= rec_type::X86_MSR_POLICY;
        self.check_caps(rtype, length, known)?;
        let rec = if rtype == rec_type::PAGE_DATA {
            let ctx = self.rules.body_ctx();
            let spare = std::mem::take(&mut self.spare);
            read_page_data(&mut self.inner, length, body_at, &ctx, &self.caps, spare)?
        } else if !known {
            // Unknown optional record (admit refused mandatory ones): skip it.
            let padded = u64::from(length) + wire::padding_len(u64::from(length)) as u64;
            wire::skip(&mut self.inner, padded, body_at)?;
            Record::UnknownOptional { rtype, length }
        } else {
            let body = wire::read_vec(&mut self.inner, length as usize, body_at)?;
            wire::read_padding(&mut self.inner, u64::from(length), body_at)?;
            codec::decode_body(rtype, &body, &self.rules.body_ctx())?
        };
        self.offset = body_at + u64::from(length) + wire::padding_len(u64::from(length)) as u64;
        self.rules.commit(&rec);
        Ok(rec)
    }

    /// The caps on a record's length, known from its header. PAGE_DATA is
    /// capped entry by entry as it arrives; skipped records are never held.
    fn check_caps(&self, rtype: u32, length: u32, known: bool) -> Result<(), ErrorKind> {
        let cap = match rtype {
            rec_type::PAGE_DATA => return Ok(()),
            _ if !known => return Ok(()),
            // The restore names end_pfn and the guest size it implies.
            rec_type::X86_PV_P2M_FRAMES => self.caps.max_p2m_body().max(self.caps.max_body.into()),
            _ => u64::from(self.caps.max_body),
        };
        OverLimit::check("record length", u64::from(length), cap, Unit::Bytes)?;
        Ok(())
    }
}

/// Checks the 24-byte image header; returns (version, options).
pub(crate) fn parse_image_header(
    ih: &[u8; IHDR_SIZE],
    strict: bool,
) -> Result<(u32, u16), ErrorKind> {
    let mut f = Fields::new(ih);
    let marker = f.u64()?;
    let id = u32::from_be_bytes(array(f.bytes(4)?));
    let version = u32::from_be_bytes(array(f.bytes(4)?));
    let options = u16::from_be_bytes(array(f.bytes(2)?));
    let res16 = u16::from_be_bytes(array(f.bytes(2)?));
    let res32 = u32::from_be_bytes(array(f.bytes(4)?));
    if marker != IHDR_MARKER {
        return Err(invalid(format!(
            "marker is {marker:#018x}, must be all ones (a legacy pre-4.6 image, or not a libxc stream)"
        )));
    }
    if id != IHDR_ID {
        return Err(invalid(format!(
            "id is {id:#010x}, must be 0x58454e46 (\"XENF\")"
        )));
    }
    if !(2..=3).contains(&version) {
        return Err(invalid(format!("version is {version}, must be 2 or 3")));
    }
    if options & IHDR_OPT_BIG_ENDIAN != 0 {
        return Err(invalid("big-endian streams are not supported"));
    }
    if strict && (options & !IHDR_OPT_BIG_ENDIAN != 0 || res16 != 0 || res32 != 0) {
        return Err(invalid(format!(
            "reserved bits set: options {options:#06x}, reserved {res16:#06x}:{res32:#010x}"
        )));
    }
    Ok((version, options))
}

/// Checks the 16-byte domain header.
pub(crate) fn parse_domain_header(
    dh: &[u8; DHDR_SIZE],
    strict: bool,
) -> Result<DomainHeader, ErrorKind> {
    let mut f = Fields::new(dh);
    let dtype = f.u32()?;
    let page_shift = f.u16()?;
    let res = f.u16()?;
    let xen_major = f.u32()?;
    let xen_minor = f.u32()?;
    let domain_type = DomainType::from_code(dtype).ok_or_else(|| {
        invalid(format!(
            "domain type is {dtype}, must be 1 (x86 PV) or 2 (x86 HVM)"
        ))
    })?;
    if page_shift != 12 {
        return Err(invalid(format!("page shift is {page_shift}, must be 12")));
    }
    if strict && res != 0 {
        return Err(invalid(format!(
            "reserved field is {res:#06x}, must be zero"
        )));
    }
    Ok(DomainHeader {
        domain_type,
        page_shift,
        xen_major,
        xen_minor,
    })
}

fn array<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    let n = s.len().min(N);
    a[..n].copy_from_slice(&s[..n]);
    a
}

/// Reads a PAGE_DATA body piecewise: the 8-byte header, the pfn array in
/// chunks (so a hostile count allocates only as entries arrive), then the
/// pages, after checking the length the entries imply.
fn read_page_data<R: Read>(
    r: &mut R,
    length: u32,
    at: u64,
    ctx: &BodyCtx,
    caps: &ReadCaps,
    mut data: Vec<u8>,
) -> Result<Record, ErrorKind> {
    let length = u64::from(length);
    if length < 8 {
        return Err(invalid(format!(
            "length is {length}, shorter than the 8-byte PAGE_DATA header"
        )));
    }
    let mut h = [0u8; 8];
    wire::read_exact_at(r, &mut h, at, false)?;
    let mut f = Fields::new(&h);
    let count = f.u32()?;
    let res = f.u32()?;
    if count == 0 {
        return Err(invalid("count is 0"));
    }
    if ctx.strict && res != 0 {
        return Err(invalid(format!("reserved field is {res:#x}, must be zero")));
    }
    let pfn_bytes = 8 * u64::from(count);
    if length < 8 + pfn_bytes {
        return Err(invalid(format!(
            "length is {length}, too short for {count} pfn entries (needs at least {})",
            8 + pfn_bytes
        )));
    }
    OverLimit::check(
        "PAGE_DATA count",
        u64::from(count),
        u64::from(caps.max_page_entries),
        Unit::Items,
    )?;
    let count = count as usize;
    if count > MAX_READ_PFNS {
        return Err(invalid(format!(
            "count is {count}, more than the {MAX_READ_PFNS} entries this reader holds in one record"
        )));
    }

    const CHUNK: usize = 4096; // entries per read
    let mut entries: Vec<PfnEntry> = Vec::new();
    let mut raw = vec![0u8; 8 * CHUNK.min(count)];
    let mut data_pages = 0u64;
    while entries.len() < count {
        let n = (count - entries.len()).min(CHUNK);
        let buf = &mut raw[..8 * n];
        wire::read_exact_at(r, buf, at + 8 + 8 * entries.len() as u64, false)?;
        if entries.capacity() < entries.len() + n {
            // Double, clamped to the count.
            let want = (2 * entries.len()).max(n).min(count);
            entries.reserve_exact(want - entries.len());
        }
        let mut fields = Fields::new(buf);
        for _ in 0..n {
            let i = entries.len();
            let e = codec::check_pfn_entry(i, fields.u64()?, ctx)?;
            if e.pfn > caps.max_pfn {
                let e = OverLimit::new(format!("pfn[{i}]"), e.pfn, caps.max_pfn, Unit::Pfn)
                    .bound("the highest pfn the receiver allows this guest");
                return Err(e.into());
            }
            if e.ty.has_data() {
                data_pages += 1;
            }
            entries.push(e);
        }
    }
    let want = 8 + pfn_bytes + PAGE_SIZE as u64 * data_pages;
    if length != want {
        return Err(invalid(format!(
            "length is {length}, must be 8 + 8 x {count} + 4096 x {data_pages} = {want}"
        )));
    }
    let data_at = at + 8 + pfn_bytes;
    wire::read_vec_into(
        r,
        &mut data,
        (PAGE_SIZE as u64 * data_pages) as usize,
        data_at,
    )?;
    // 8 + 8C + 4096N is always a multiple of 8: no padding.
    Ok(Record::PageData(PageData { entries, data }))
}
