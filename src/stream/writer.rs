//! Writer of one libxc stream over any `Write`. Every record is checked
//! against the same rules the reader enforces before a byte of it is
//! written; pages go out with vectored writes straight from the caller's
//! buffers.

use super::codec::{self, BodyCtx};
use super::error::{invalid, ErrorKind, Layer, Place, StreamError};
use super::reader::{IHDR_ID, IHDR_MARKER};
use super::record::{rec_type, DomainHeader, PfnEntry, Record};
use super::rules::Rules;
use super::wire;
use super::{PAGE_SIZE, REC_LENGTH_MAX};
use std::io::Write;

pub struct LibxcWriter<W: Write> {
    inner: W,
    rules: Rules,
    written: u64,
    index: u64,
}

impl<W: Write> LibxcWriter<W> {
    /// Writes the image header (version 3) and the domain header.
    pub fn new(inner: W, header: &DomainHeader) -> Result<Self, StreamError> {
        Self::with_version(inner, header, 3)
    }

    /// As [`LibxcWriter::new`] with an explicit image version (2 or 3). A
    /// version 2 stream has no STATIC_DATA_END and no CPU policy records,
    /// as Xen 4.6–4.13 wrote them.
    pub fn with_version(
        mut inner: W,
        header: &DomainHeader,
        version: u32,
    ) -> Result<Self, StreamError> {
        let fail = |k: ErrorKind| {
            StreamError::new(Layer::Libxc, k)
                .with_place(Place::Header("image header"))
                .with_offset(0)
        };
        if !(2..=3).contains(&version) {
            return Err(fail(invalid(format!(
                "version {version}: only 2 and 3 exist"
            ))));
        }
        if header.page_shift != 12 {
            return Err(fail(invalid(format!(
                "page shift {}: only 12 is valid",
                header.page_shift
            ))));
        }
        let mut h = Vec::with_capacity(40);
        h.extend_from_slice(&IHDR_MARKER.to_be_bytes());
        h.extend_from_slice(&IHDR_ID.to_be_bytes());
        h.extend_from_slice(&version.to_be_bytes());
        h.extend_from_slice(&0u16.to_be_bytes()); // options: little endian
        h.extend_from_slice(&[0; 6]);
        h.extend_from_slice(&header.domain_type.code().to_le_bytes());
        h.extend_from_slice(&header.page_shift.to_le_bytes());
        h.extend_from_slice(&[0; 2]);
        h.extend_from_slice(&header.xen_major.to_le_bytes());
        h.extend_from_slice(&header.xen_minor.to_le_bytes());
        inner.write_all(&h).map_err(|e| fail(ErrorKind::Io(e)))?;
        Ok(LibxcWriter {
            inner,
            // The writer holds itself to the verifier's rules.
            rules: Rules::new(version, header.domain_type, true),
            written: h.len() as u64,
            index: 0,
        })
    }

    fn fail(&self, rtype: u32, kind: ErrorKind) -> StreamError {
        StreamError::new(Layer::Libxc, kind)
            .with_place(Place::Record {
                index: Some(self.index),
                rtype: Some(rtype),
            })
            .with_offset(self.written)
    }

    /// Writes one record after validating it (body layout, ordering, pfn
    /// range). Writing END ends the stream.
    pub fn write_record(&mut self, rec: &Record) -> Result<(), StreamError> {
        let rtype = rec.type_code();
        if let Record::PageData(pd) = rec {
            let pages: Vec<&[u8]> = pd.data.chunks(PAGE_SIZE).collect();
            let n_data = pd.pages_with_data();
            if pd.data.len() != n_data * PAGE_SIZE {
                return Err(self.fail(
                    rtype,
                    invalid(format!(
                        "{} bytes of page data for {n_data} data pages (needs {})",
                        pd.data.len(),
                        n_data * PAGE_SIZE
                    )),
                ));
            }
            return self.write_page_batch(&pd.entries, &pages);
        }
        self.rules.admit(rtype).map_err(|k| self.fail(rtype, k))?;
        let body = codec::encode_body(rec).map_err(|k| self.fail(rtype, k))?;
        // Round trip through the decoder: the writer never emits what the
        // reader would refuse.
        codec::decode_body(rtype, &body, &self.rules.body_ctx())
            .map_err(|k| self.fail(rtype, k))?;
        self.emit(rtype, &[&body])?;
        self.rules.commit(rec);
        Ok(())
    }

    /// One PAGE_DATA record from borrowed page bodies (one per entry with
    /// data, 4096 bytes each), written with vectored writes, no copy of the
    /// page bodies.
    pub fn write_page_batch(
        &mut self,
        entries: &[PfnEntry],
        pages: &[&[u8]],
    ) -> Result<(), StreamError> {
        let rtype = rec_type::PAGE_DATA;
        self.rules.admit(rtype).map_err(|k| self.fail(rtype, k))?;
        let ctx: BodyCtx = self.rules.body_ctx();
        let (head, n_data) =
            codec::encode_page_header(entries, &ctx).map_err(|k| self.fail(rtype, k))?;
        if pages.len() != n_data {
            return Err(self.fail(
                rtype,
                invalid(format!(
                    "{} page bodies given for {n_data} entries whose type carries data",
                    pages.len()
                )),
            ));
        }
        if let Some(i) = pages.iter().position(|p| p.len() != PAGE_SIZE) {
            return Err(self.fail(
                rtype,
                invalid(format!(
                    "page body {i} is {} bytes, must be {PAGE_SIZE}",
                    pages.get(i).map_or(0, |p| p.len())
                )),
            ));
        }
        let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + pages.len());
        parts.push(&head);
        parts.extend_from_slice(pages);
        self.emit(rtype, &parts)
    }

    /// Writes header, body parts and padding, after the cap check.
    fn emit(&mut self, rtype: u32, body: &[&[u8]]) -> Result<(), StreamError> {
        let len: u64 = body.iter().map(|b| b.len() as u64).sum();
        let pad = wire::padding_len(len);
        // Xen's writer checks the padded length against the cap.
        if len + pad as u64 > REC_LENGTH_MAX as u64 {
            return Err(self.fail(
                rtype,
                invalid(format!(
                    "padded length {:#x} exceeds the record cap of {REC_LENGTH_MAX:#x} (128 MiB)",
                    len + pad as u64
                )),
            ));
        }
        let mut hdr = [0u8; 8];
        hdr[..4].copy_from_slice(&rtype.to_le_bytes());
        // Fits: len <= REC_LENGTH_MAX < 2^32.
        hdr[4..].copy_from_slice(&(len as u32).to_le_bytes());
        let mut parts: Vec<&[u8]> = Vec::with_capacity(body.len() + 2);
        parts.push(&hdr);
        parts.extend_from_slice(body);
        parts.push(&wire::ZEROS[..pad]);
        wire::write_all_vectored(&mut self.inner, &parts)
            .map_err(|e| self.fail(rtype, ErrorKind::Io(e)))?;
        self.written += 8 + len + pad as u64;
        self.index += 1;
        Ok(())
    }

    /// Bytes written so far, headers included.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }
    /// Records written so far.
    pub fn records_written(&self) -> u64 {
        self.index
    }
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
    /// Writes END (unless already written), flushes and returns the inner
    /// writer.
    pub fn finish(mut self) -> Result<W, StreamError> {
        if !self.rules.ended() {
            self.write_record(&Record::End)?;
        }
        self.inner
            .flush()
            .map_err(|e| self.fail(rec_type::END, ErrorKind::Io(e)))?;
        Ok(self.inner)
    }
}
