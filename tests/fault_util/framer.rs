//! Where the records of an `xl migrate` data stream begin, learned from the
//! bytes as they pass (so a relay can cut exactly at a record boundary of a
//! live stream, whose later rounds differ from run to run).
//!
//! Layout (docs/REFERENCE.md §2–§7): the xl save-file header (48 bytes and its
//! optional data), the libxl header (16), libxl records (8-byte header,
//! body padded to 8); the LIBXC_CONTEXT record is followed by the libxc
//! stream: image header (24), domain header (16), records (8-byte header,
//! body padded to 8) up to END; then the libxl records up to its END; then
//! permission to go.

use rxmigrate::stream::handshake;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    XlHeader,
    XlOptional,
    LibxlHeader,
    LibxlRecord,
    LibxlBody { then_libxc: bool, end: bool },
    LibxcImage,
    LibxcDomain,
    LibxcRecord,
    LibxcBody { end: bool },
    Go,
    Done,
}

/// Feed it the data stream; it lists the offsets where records begin.
pub struct Framer {
    item: Item,
    /// Bytes of the current item still to come.
    want: u64,
    /// The current item's header bytes, when it is parsed.
    hdr: Vec<u8>,
    pos: u64,
    /// Record (and header) starts, ascending; the last one is the end of
    /// the stream (where permission to go starts) once it is known.
    pub boundaries: Vec<u64>,
    /// The stream's length (without permission to go), once known.
    pub stream_end: Option<u64>,
}

fn pad8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

fn u32_at(b: &[u8], at: usize) -> u64 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as u64
}

impl Default for Framer {
    fn default() -> Self {
        Framer {
            item: Item::XlHeader,
            want: 48,
            hdr: Vec::new(),
            pos: 0,
            boundaries: vec![0],
            stream_end: None,
        }
    }
}

impl Framer {
    /// Bytes of permission to go after the stream.
    pub const GO_LEN: u64 = handshake::PERMISSION_TO_GO.len() as u64;

    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.item != Item::Done {
            let take = (self.want as usize).min(bytes.len());
            if self.parses() {
                self.hdr.extend_from_slice(&bytes[..take]);
            }
            bytes = &bytes[take..];
            self.pos += take as u64;
            self.want -= take as u64;
            while self.want == 0 && self.item != Item::Done {
                self.next();
            }
        }
    }

    fn parses(&self) -> bool {
        matches!(
            self.item,
            Item::XlHeader | Item::LibxlRecord | Item::LibxcRecord
        )
    }

    fn start(&mut self, item: Item, len: u64, boundary: bool) {
        self.item = item;
        self.want = len;
        self.hdr.clear();
        if boundary {
            self.boundaries.push(self.pos);
        }
    }

    /// The current item is complete: begin the next.
    fn next(&mut self) {
        match self.item {
            Item::XlHeader => {
                let opt = u32_at(&self.hdr, 44);
                self.start(Item::XlOptional, opt, false);
            }
            Item::XlOptional => self.start(Item::LibxlHeader, 16, true),
            Item::LibxlHeader => self.start(Item::LibxlRecord, 8, true),
            Item::LibxlRecord => {
                let (ty, len) = (u32_at(&self.hdr, 0), u32_at(&self.hdr, 4));
                let body = Item::LibxlBody {
                    then_libxc: ty == 1,
                    end: ty == 0,
                };
                self.start(body, pad8(len), false);
            }
            Item::LibxlBody { then_libxc, end } => {
                if end {
                    self.stream_end = Some(self.pos);
                    self.start(Item::Go, Self::GO_LEN, true);
                } else if then_libxc {
                    self.start(Item::LibxcImage, 24, true);
                } else {
                    self.start(Item::LibxlRecord, 8, true);
                }
            }
            Item::LibxcImage => self.start(Item::LibxcDomain, 16, true),
            Item::LibxcDomain => self.start(Item::LibxcRecord, 8, true),
            Item::LibxcRecord => {
                let (ty, len) = (u32_at(&self.hdr, 0), u32_at(&self.hdr, 4));
                self.start(Item::LibxcBody { end: ty == 0 }, pad8(len), false);
            }
            Item::LibxcBody { end } => {
                let next = if end {
                    Item::LibxlRecord
                } else {
                    Item::LibxcRecord
                };
                self.start(next, 8, true);
            }
            Item::Go => {
                self.item = Item::Done;
                self.want = 0;
            }
            Item::Done => {}
        }
    }
}
