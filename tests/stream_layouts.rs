//! The codec against hand-built streams in Xen's record order, byte for byte.

mod stream_fixtures;

use rxmigrate::stream::{
    self, handshake, hvm_context, read_libxl_header, read_libxl_record, read_xl_header,
    write_libxl_header, write_libxl_record, write_xl_header, DomainType, LibxcReader, LibxcWriter,
    LibxlRecord, PfnEntry, Record, XL_FLAG_JSON, XL_FLAG_STREAMV2,
};
use std::io::Read;
use stream_fixtures::*;

fn write_all(dt: DomainType, records: &[Record]) -> Vec<u8> {
    let mut w = LibxcWriter::new(Vec::new(), &header(dt)).unwrap();
    for r in records {
        w.write_record(r).unwrap();
    }
    let n = w.bytes_written();
    let ended = matches!(records.last(), Some(Record::End));
    let out = w.finish().unwrap();
    // finish() adds the 8-byte END unless it was written already.
    assert_eq!(n as usize + if ended { 0 } else { 8 }, out.len());
    out
}

fn read_all(bytes: &[u8]) -> (LibxcReader<&[u8]>, Vec<Record>) {
    let mut r = LibxcReader::new(bytes).unwrap();
    let mut v = Vec::new();
    while let Some(rec) = r.next_record().unwrap() {
        v.push(rec);
    }
    (r, v)
}

#[test]
fn pv_stream_written_matches_the_reference_layout() {
    let recs = pv_records();
    // Writer gets everything but END: finish() writes it.
    let out = write_all(DomainType::X86Pv, &recs[..recs.len() - 1]);
    assert_eq!(out, pv_bytes());
}

#[test]
fn hvm_stream_written_matches_the_reference_layout() {
    let recs = hvm_records();
    let out = write_all(DomainType::X86Hvm, &recs);
    assert_eq!(out, hvm_bytes());
}

#[test]
fn pv_stream_reads_back_record_for_record() {
    let bytes = pv_bytes();
    let (r, recs) = read_all(&bytes);
    assert_eq!(recs, pv_records());
    assert_eq!(r.version(), 3);
    assert_eq!(r.domain_header(), &header(DomainType::X86Pv));
    assert_eq!(r.offset(), bytes.len() as u64);
    assert_eq!(r.record_index(), recs.len() as u64);
}

#[test]
fn hvm_stream_reads_back_record_for_record() {
    let bytes = hvm_bytes();
    let (_, recs) = read_all(&bytes);
    assert_eq!(recs, hvm_records());
    // The fixture's context is what the HVM context parser sees.
    let entries = hvm_context_entries();
    assert_eq!(entries.len(), 8);
    assert_eq!(entries[0].typecode, hvm_context::HEADER);
    hvm_context::check_header(&entries).unwrap();
    assert_eq!(hvm_context::build(&entries), hvm_context_blob());
}

#[test]
fn reader_never_reads_past_end() {
    let mut bytes = hvm_bytes();
    bytes.extend_from_slice(b"libxl goes on here");
    let mut input = &bytes[..];
    let mut r = LibxcReader::new(&mut input).unwrap();
    while r.next_record().unwrap().is_some() {}
    // After END: no more reads, Ok(None) forever.
    assert_eq!(r.next_record().unwrap(), None);
    assert_eq!(input, b"libxl goes on here");
}

#[test]
fn write_page_batch_is_a_page_data_record() {
    let pages: Vec<Vec<u8>> = [0u64, 5].iter().map(|&p| page(p)).collect();
    let refs: Vec<&[u8]> = pages.iter().map(|p| p.as_slice()).collect();
    let entries = [
        PfnEntry {
            pfn: 0,
            ty: stream::PageType::NOTAB,
        },
        PfnEntry {
            pfn: 3,
            ty: stream::PageType::XTAB,
        },
        PfnEntry {
            pfn: 5,
            ty: stream::PageType::NOTAB,
        },
    ];
    let mut w = LibxcWriter::new(Vec::new(), &header(DomainType::X86Hvm)).unwrap();
    w.write_record(&Record::StaticDataEnd).unwrap();
    w.write_page_batch(&entries, &refs).unwrap();
    let out = w.finish().unwrap();
    let (_, recs) = read_all(&out);
    assert_eq!(recs[1], page_data(&[(0, 0), (3, 0xF), (5, 0)]));
    // Too few or wrongly sized bodies are refused before anything is written.
    let mut w = LibxcWriter::new(Vec::new(), &header(DomainType::X86Hvm)).unwrap();
    w.write_record(&Record::StaticDataEnd).unwrap();
    let before = w.bytes_written();
    assert!(w.write_page_batch(&entries, &refs[..1]).is_err());
    assert!(w
        .write_page_batch(&entries, &[refs[0], &refs[1][..100]])
        .is_err());
    assert_eq!(w.bytes_written(), before);
    assert_eq!(w.get_mut().len() as u64, before);
}

#[test]
fn version_2_streams_infer_static_data_end() {
    // A v2 PV stream: no STATIC_DATA_END, no CPU policy.
    let recs: Vec<Record> = pv_records()
        .into_iter()
        .filter(|r| {
            !matches!(
                r,
                Record::StaticDataEnd | Record::X86CpuidPolicy(_) | Record::X86MsrPolicy(_)
            )
        })
        .collect();
    let mut w = LibxcWriter::with_version(Vec::new(), &header(DomainType::X86Pv), 2).unwrap();
    for r in &recs[..recs.len() - 1] {
        w.write_record(r).unwrap();
    }
    let out = w.finish().unwrap();
    assert_eq!(&out[12..16], &2u32.to_be_bytes());
    let (r, back) = read_all(&out);
    assert_eq!(r.version(), 2);
    assert_eq!(back, recs);

    // STATIC_DATA_END itself is not allowed in v2.
    let mut w = LibxcWriter::with_version(Vec::new(), &header(DomainType::X86Hvm), 2).unwrap();
    let e = w.write_record(&Record::StaticDataEnd).unwrap_err();
    assert!(e.to_string().contains("version 2"), "{e}");
}

#[test]
fn hvm_params_may_come_before_or_after_the_context() {
    let mut recs = hvm_records();
    let n = recs.len();
    recs.swap(n - 3, n - 2); // HVM_PARAMS, then HVM_CONTEXT (the spec's order)
    let out = write_all(DomainType::X86Hvm, &recs);
    let (_, back) = read_all(&out);
    assert_eq!(back, recs);
}

#[test]
fn unknown_optional_records_are_skipped() {
    let mut b = Bytes(libxc_headers(3, 2));
    b.record(0x8000_1234, b"future stuff");
    b.record(0x10, &[]);
    b.record(0, &[]);
    let (_, recs) = read_all(&b.0);
    assert_eq!(
        recs,
        vec![
            Record::UnknownOptional {
                rtype: 0x8000_1234,
                length: 12
            },
            Record::StaticDataEnd,
            Record::End
        ]
    );
    // ... but not by the strict (verifier) reader.
    let mut r = LibxcReader::with_options(
        &b.0[..],
        stream::ReadOptions {
            strict: true,
            ..Default::default()
        },
    )
    .unwrap();
    let e = r.next_record().unwrap_err();
    assert!(e.to_string().contains("unknown optional record"), "{e}");
    // Writers cannot produce them.
    let mut w = LibxcWriter::new(Vec::new(), &header(DomainType::X86Hvm)).unwrap();
    assert!(w
        .write_record(&Record::UnknownOptional {
            rtype: 0x8000_0000,
            length: 0
        })
        .is_err());
}

#[test]
fn libxl_stream_layout() {
    let mut out = Vec::new();
    write_libxl_header(&mut out).unwrap();
    write_libxl_record(&mut out, &LibxlRecord::LibxcContext).unwrap();
    for r in hvm_tail(true) {
        write_libxl_record(&mut out, &r).unwrap();
    }
    let mut want = libxl_header_bytes();
    want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
    want.extend_from_slice(&hvm_tail_bytes(true));
    assert_eq!(out, want);

    let mut r = &out[..];
    let h = read_libxl_header(&mut r).unwrap();
    assert_eq!((h.version, h.options), (2, 0));
    assert_eq!(
        read_libxl_record(&mut r).unwrap(),
        LibxlRecord::LibxcContext
    );
    for want in hvm_tail(true) {
        assert_eq!(read_libxl_record(&mut r).unwrap(), want);
    }
    assert!(r.is_empty());
}

#[test]
fn libxl_checkpoint_state_is_four_bytes_plus_padding() {
    let mut out = Vec::new();
    write_libxl_record(&mut out, &LibxlRecord::CheckpointState(2)).unwrap();
    assert_eq!(out, [5, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        read_libxl_record(&mut &out[..]).unwrap(),
        LibxlRecord::CheckpointState(2)
    );
}

#[test]
fn libxl_refuses_unknown_records_even_optional_ones() {
    let mut b = Bytes::default();
    b.record(0x8000_0001, &[]);
    let e = read_libxl_record(&mut &b.0[..]).unwrap_err();
    assert!(e.to_string().contains("unknown record type"), "{e}");
    let mut b = Bytes::default();
    b.record(6, &[]);
    assert!(read_libxl_record(&mut &b.0[..]).is_err());
}

#[test]
fn libxl_xenstore_data_rules() {
    for (data, why) in [
        (&b"key\0val"[..], "not NUL-terminated"),
        (&b"\0val\0"[..], "empty key"),
        (&b"/abs\0val\0"[..], "absolute"),
        (&b"key\0"[..], "value is not NUL-terminated"),
    ] {
        let mut body = Bytes::default();
        body.u32(2).u32(0).raw(data);
        let mut b = Bytes::default();
        b.record(2, &body.0);
        let e = read_libxl_record(&mut &b.0[..]).unwrap_err();
        assert!(e.to_string().contains(why), "{why}: {e}");
    }
    // The writer refuses what the reader would.
    let bad = LibxlRecord::EmulatorXenstoreData {
        emulator_id: 2,
        index: 0,
        pairs: vec![("/local/x".into(), "1".into())],
    };
    assert!(write_libxl_record(&mut Vec::new(), &bad).is_err());
}

#[test]
fn xl_header_layout_and_config() {
    let mut out = Vec::new();
    write_xl_header(&mut out, Some(CONFIG_JSON)).unwrap();
    assert_eq!(out, xl_header_bytes(Some(CONFIG_JSON)));
    assert_eq!(out.len(), 48 + 4 + CONFIG_JSON.len() + 1);
    let h = read_xl_header(&mut &out[..]).unwrap();
    assert_eq!(h.mandatory_flags, XL_FLAG_JSON | XL_FLAG_STREAMV2);
    assert_eq!(h.optional_flags, 0);
    assert_eq!(h.config.as_deref(), Some(CONFIG_JSON));

    let mut out = Vec::new();
    write_xl_header(&mut out, None).unwrap();
    assert_eq!(out, xl_header_bytes(None));
    let h = read_xl_header(&mut &out[..]).unwrap();
    assert_eq!(h.mandatory_flags, XL_FLAG_STREAMV2);
    assert_eq!(h.config, None);
}

#[test]
fn xl_header_refuses_bad_input() {
    let good = xl_header_bytes(Some(CONFIG_JSON));
    let mut bad_flags = good.clone();
    bad_flags[36] |= 4;
    let e = read_xl_header(&mut &bad_flags[..]).unwrap_err();
    assert!(e.to_string().contains("unknown mandatory flags 0x4"), "{e}");

    let mut big_endian = good.clone();
    big_endian[32..36].copy_from_slice(&0x0102_0304u32.to_be_bytes());
    assert!(read_xl_header(&mut &big_endian[..])
        .unwrap_err()
        .to_string()
        .contains("byte order"));

    let mut long_config = good.clone();
    long_config[48] += 1; // config_len past the optional data
    assert!(read_xl_header(&mut &long_config[..])
        .unwrap_err()
        .to_string()
        .contains("runs past"));

    let mut no_nul = good.clone();
    let n = no_nul.len();
    no_nul[n - 1] = b' ';
    assert!(read_xl_header(&mut &no_nul[..])
        .unwrap_err()
        .to_string()
        .contains("NUL"));

    let mut magic = good;
    magic[0] = b'x';
    assert!(read_xl_header(&mut &magic[..])
        .unwrap_err()
        .to_string()
        .contains("magic"));
}

#[test]
fn whole_xl_file_reads_layer_by_layer() {
    let file = xl_file(&hvm_bytes(), true, true);
    let mut r = &file[..];
    let h = read_xl_header(&mut r).unwrap();
    assert!(h.is_streamv2());
    read_libxl_header(&mut r).unwrap();
    assert_eq!(
        read_libxl_record(&mut r).unwrap(),
        LibxlRecord::LibxcContext
    );
    let mut lx = LibxcReader::new(&mut r).unwrap();
    let mut recs = Vec::new();
    while let Some(rec) = lx.next_record().unwrap() {
        recs.push(rec);
    }
    assert_eq!(recs, hvm_records());
    for want in hvm_tail(true) {
        assert_eq!(read_libxl_record(&mut r).unwrap(), want);
    }
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn handshake_bytes_are_xls() {
    assert_eq!(
        handshake::BANNER,
        b"xl migration receiver ready, send binary domain data.\n"
    );
    assert_eq!(handshake::READY.last(), Some(&0));
    assert_eq!(handshake::PERMISSION_TO_GO.len(), 44);
    assert_eq!(handshake::REPORT.len(), 39);
}

#[test]
fn detect_tells_the_layers_apart() {
    assert_eq!(
        stream::detect(&xl_file(&hvm_bytes(), true, false)),
        Some(stream::Format::Xl)
    );
    assert_eq!(
        stream::detect(&libxl_header_bytes()),
        Some(stream::Format::Libxl)
    );
    assert_eq!(stream::detect(&pv_bytes()), Some(stream::Format::Libxc));
}

/// Writes the hand-built streams as fuzzing seeds when
/// RXMIGRATE_FUZZ_CORPUS names a directory (see fuzz/README.md); otherwise
/// checks that every seed is a stream `verify` accepts.
#[test]
fn fuzz_seeds_are_valid_streams() {
    let seeds: Vec<(&str, &str, Vec<u8>)> = vec![
        ("libxc_reader", "pv-v3", pv_bytes()),
        ("libxc_reader", "hvm-v3", hvm_bytes()),
        ("verify_any", "pv-libxc", pv_bytes()),
        ("verify_any", "hvm-xl", xl_file(&hvm_bytes(), true, true)),
        ("verify_any", "pv-xl", xl_file(&pv_bytes(), false, false)),
        ("hvm_context", "blob", hvm_context_blob()),
    ];
    for (target, name, bytes) in &seeds {
        if *target != "hvm_context" {
            let mut input = &bytes[..];
            rxmigrate::inspect::verify(&mut input, false, &mut std::io::sink())
                .unwrap_or_else(|e| panic!("seed {name}: {e}"));
        }
    }
    if let Some(dir) = std::env::var_os("RXMIGRATE_FUZZ_CORPUS") {
        for (target, name, bytes) in seeds {
            let d = std::path::Path::new(&dir).join(target);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(name), bytes).unwrap();
        }
    }
}
