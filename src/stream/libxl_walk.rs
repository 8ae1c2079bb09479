//! The one walk over a libxl stream (docs/REFERENCE.md §3): its header, then
//! its records in order, with the rules of where each may stand. The libxc
//! stream inside it is read by the caller between LIBXC_CONTEXT and the
//! records after it; the walk holds no reader, so the same input can go to
//! a [`super::LibxcReader`] in between.
//!
//! Restore (`image`) and `inspect` / `verify` all read libxl records here.

use super::error::{ErrorKind, Layer, Place, StreamError};
use super::libxl::{parse_header, read_record_at, LibxlHeader, LibxlRecord, LIBXL_HDR_SIZE};
use super::limits::LibxlCaps;
use super::record::DomainType;
use super::wire;
use std::io::Read;

/// One record as the walk found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walked {
    pub rec: LibxlRecord,
    /// Index of the record in the libxl stream (LIBXC_CONTEXT counts, the
    /// libxc records inside do not).
    pub index: u64,
    /// Input offset of the record's header.
    pub offset: u64,
    /// `body_length` (without padding).
    pub length: u32,
}

/// Where a libxl stream walk is, and what it has seen.
#[derive(Debug, Clone)]
pub struct LibxlWalk {
    /// Input offset of the next byte.
    offset: u64,
    /// Whether `offset` is the input's (false: counted from an unknown base).
    placed: bool,
    index: u64,
    strict: bool,
    caps: LibxlCaps,
    libxc_seen: bool,
    /// The guest type of the libxc stream, once it has been read.
    domain: Option<DomainType>,
}

impl LibxlWalk {
    /// A walk from the libxl header at input offset `base`. `strict` adds
    /// what only Xen's verifier checks (reserved option bits, emulator ids);
    /// `caps` bounds the emulator records from their header.
    pub fn new(base: u64, strict: bool, caps: LibxlCaps) -> Self {
        LibxlWalk {
            offset: base,
            placed: true,
            index: 0,
            strict,
            caps,
            libxc_seen: false,
            domain: None,
        }
    }

    /// A walk that picks up after a libxc stream some other reader took
    /// from a stream whose first record was LIBXC_CONTEXT (as a restore
    /// reads it): the next record is #1; its input offset is not known here,
    /// so errors name the record only.
    pub fn after_libxc(strict: bool, caps: LibxlCaps) -> Self {
        LibxlWalk {
            offset: 0,
            placed: false,
            index: 1,
            strict,
            caps,
            libxc_seen: true,
            domain: None,
        }
    }

    /// Input offset of the next byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads and checks the libxl header (version 2, little-endian).
    pub fn header<R: Read + ?Sized>(&mut self, r: &mut R) -> Result<LibxlHeader, StreamError> {
        let at = self.offset;
        let mut h = [0u8; LIBXL_HDR_SIZE];
        let fail = |k| {
            self.locate(
                StreamError::new(Layer::Libxl, k).with_place(Place::Header("header")),
                at,
            )
        };
        wire::read_exact_at(r, &mut h, at, true).map_err(fail)?;
        let hdr = parse_header(&h, self.strict).map_err(fail)?;
        self.offset += LIBXL_HDR_SIZE as u64;
        Ok(hdr)
    }

    /// The libxc stream after LIBXC_CONTEXT is a guest of type `domain`
    /// (known from its domain header).
    pub fn set_domain(&mut self, domain: DomainType) {
        self.domain = Some(domain);
    }

    /// Input bytes read elsewhere (the libxc stream, or its records between
    /// two checkpoints) up to offset `end`.
    pub fn skip_to(&mut self, end: u64) {
        self.offset = end;
    }

    /// The next record outside the libxc stream, checked against where it
    /// stands ([`LibxlWalk::admit`]).
    pub fn next<R: Read + ?Sized>(&mut self, r: &mut R) -> Result<Walked, StreamError> {
        let w = self.read(r)?;
        self.admit(&w)?;
        Ok(w)
    }

    /// The next record between a libxc CHECKPOINT and the libxc records
    /// after it ([`LibxlWalk::admit_in_checkpoint`]).
    pub fn next_in_checkpoint<R: Read + ?Sized>(
        &mut self,
        r: &mut R,
    ) -> Result<Walked, StreamError> {
        let w = self.read(r)?;
        self.admit_in_checkpoint(&w)?;
        Ok(w)
    }

    /// Where a record outside the libxc stream may stand: one LIBXC_CONTEXT,
    /// END after it, emulator records only for an HVM guest, no checkpoint
    /// records (those come only inside a libxc CHECKPOINT).
    pub fn admit(&mut self, w: &Walked) -> Result<(), StreamError> {
        let refuse = |msg: String| Err(self.refuse(w, msg));
        match &w.rec {
            LibxlRecord::End if !self.libxc_seen => {
                refuse("END before any LIBXC_CONTEXT: the stream holds no domain".into())
            }
            LibxlRecord::LibxcContext if self.libxc_seen => {
                refuse("second LIBXC_CONTEXT record".into())
            }
            LibxlRecord::LibxcContext => {
                self.libxc_seen = true;
                Ok(())
            }
            LibxlRecord::EmulatorXenstoreData { .. } | LibxlRecord::EmulatorContext { .. }
                if self.pv() =>
            {
                refuse(format!(
                    "{} in the stream of a PV guest (emulator records are HVM-only)",
                    w.rec.name()
                ))
            }
            LibxlRecord::CheckpointEnd => {
                refuse("CHECKPOINT_END without a libxc CHECKPOINT before it".into())
            }
            LibxlRecord::CheckpointState(_) => {
                refuse("CHECKPOINT_STATE belongs on the COLO back-channel, not in a stream".into())
            }
            _ => Ok(()),
        }
    }

    /// Where a record between a libxc CHECKPOINT and the libxc records after
    /// it may stand: emulator records (HVM only) up to CHECKPOINT_END.
    pub fn admit_in_checkpoint(&self, w: &Walked) -> Result<(), StreamError> {
        match &w.rec {
            LibxlRecord::CheckpointEnd => Ok(()),
            LibxlRecord::EmulatorXenstoreData { .. } | LibxlRecord::EmulatorContext { .. } => {
                if self.pv() {
                    Err(self.refuse(w, "emulator record in the stream of a PV guest".into()))
                } else {
                    Ok(())
                }
            }
            other => {
                let msg = format!(
                    "{} inside a checkpoint (only emulator records and CHECKPOINT_END belong there)",
                    other.name()
                );
                Err(self.refuse(w, msg))
            }
        }
    }

    /// An error about record `w`, naming its index, type and offset.
    pub fn refuse(&self, w: &Walked, msg: String) -> StreamError {
        self.refuse_record(w.index, w.rec.type_code(), w.offset, msg)
    }

    /// An error about record #`index` of type `rtype` at `offset`.
    pub fn refuse_record(&self, index: u64, rtype: u32, offset: u64, msg: String) -> StreamError {
        self.locate(
            StreamError::new(Layer::Libxl, ErrorKind::Invalid(msg)).with_place(Place::Record {
                index: Some(index),
                rtype: Some(rtype),
            }),
            offset,
        )
    }

    fn pv(&self) -> bool {
        self.domain == Some(DomainType::X86Pv)
    }

    fn locate(&self, e: StreamError, at: u64) -> StreamError {
        if self.placed {
            e.with_offset(at)
        } else {
            e
        }
    }

    /// The next record, read and decoded but not yet admitted.
    pub fn read<R: Read + ?Sized>(&mut self, r: &mut R) -> Result<Walked, StreamError> {
        let start = self.offset;
        let index = self.index;
        let mut at = start;
        match read_record_at(r, &mut at, self.strict, &self.caps) {
            Ok((rec, length)) => {
                self.offset = at;
                self.index += 1;
                Ok(Walked {
                    rec,
                    index,
                    offset: start,
                    length,
                })
            }
            Err((rtype, k)) => Err(self.locate(
                StreamError::new(Layer::Libxl, k).with_place(Place::Record {
                    index: Some(index),
                    rtype,
                }),
                start,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::libxl::{write_libxl_header, write_libxl_record};
    use super::*;

    fn stream(records: &[LibxlRecord]) -> Vec<u8> {
        let mut b = Vec::new();
        write_libxl_header(&mut b).unwrap();
        for r in records {
            write_libxl_record(&mut b, r).unwrap();
        }
        b
    }

    fn ctx(n: usize) -> LibxlRecord {
        LibxlRecord::EmulatorContext {
            emulator_id: 2,
            index: 0,
            blob: vec![0xab; n],
        }
    }

    #[test]
    fn records_are_numbered_and_placed() {
        let b = stream(&[LibxlRecord::LibxcContext, ctx(5), LibxlRecord::End]);
        let r = &mut b.as_slice();
        let mut w = LibxlWalk::new(100, true, LibxlCaps::default());
        w.header(r).unwrap();
        let first = w.next(r).unwrap();
        assert_eq!((first.index, first.offset), (0, 116));
        w.set_domain(DomainType::X86Hvm);
        let second = w.next(r).unwrap();
        assert_eq!((second.index, second.offset, second.length), (1, 124, 13));
        let end = w.next(r).unwrap();
        assert_eq!((end.rec, end.index, end.offset), (LibxlRecord::End, 2, 148));
        assert_eq!(w.offset(), 156);
    }

    #[test]
    fn rules_name_the_record_and_never_its_data() {
        // Emulator state of a PV guest: refused, named, not dumped.
        let b = stream(&[LibxlRecord::LibxcContext, ctx(1 << 16)]);
        let r = &mut b.as_slice();
        let mut w = LibxlWalk::new(0, false, LibxlCaps::default());
        w.header(r).unwrap();
        w.next(r).unwrap();
        w.set_domain(DomainType::X86Pv);
        let e = w.next(r).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("EMULATOR_CONTEXT in the stream of a PV guest"),
            "{text}"
        );
        assert!(text.contains("#1") && text.contains("0x18"), "{text}");
        assert!(text.len() < 300, "{text}");

        for (records, want) in [
            (vec![LibxlRecord::End], "END before any LIBXC_CONTEXT"),
            (
                vec![LibxlRecord::LibxcContext, LibxlRecord::LibxcContext],
                "second LIBXC_CONTEXT",
            ),
            (
                vec![LibxlRecord::CheckpointEnd],
                "without a libxc CHECKPOINT",
            ),
            (vec![LibxlRecord::CheckpointState(1)], "COLO back-channel"),
        ] {
            let b = stream(&records);
            let r = &mut b.as_slice();
            let mut w = LibxlWalk::new(0, false, LibxlCaps::default());
            w.header(r).unwrap();
            let e = (0..records.len())
                .find_map(|_| w.next(r).err())
                .expect("refused");
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    #[test]
    fn inside_a_checkpoint_only_emulator_records_and_its_end() {
        let b = stream(&[ctx(1), LibxlRecord::CheckpointEnd, LibxlRecord::End]);
        let r = &mut b.as_slice();
        let mut w = LibxlWalk::new(0, false, LibxlCaps::default());
        w.header(r).unwrap();
        w.next_in_checkpoint(r).unwrap();
        w.next_in_checkpoint(r).unwrap();
        let e = w.next_in_checkpoint(r).unwrap_err();
        assert!(e.to_string().contains("END inside a checkpoint"), "{e}");
    }

    #[test]
    fn after_libxc_names_records_without_offsets() {
        let b = stream(&[LibxlRecord::LibxcContext]);
        let r = &mut &b[LIBXL_HDR_SIZE..];
        let mut w = LibxlWalk::after_libxc(false, LibxlCaps::default());
        let e = w.next(r).unwrap_err();
        assert_eq!(e.record_index(), Some(1));
        assert_eq!(e.offset(), None);
    }
}
