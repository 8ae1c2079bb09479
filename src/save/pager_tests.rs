//! The pager against a blank simulated HVM domain: zero pages go as XALLOC
//! on their first send only; a page sent with data that is zero later goes
//! with its (zero) data again.

use super::*;
use crate::hv::sim::SimHost;
use crate::hv::{DomainSpec, GuestType, Toolstack};
use crate::save::{hvm::HvmOps, DirectHooks};
use crate::stream::{DomainHeader, DomainType, LibxcReader, Record};

fn write_page(host: &SimHost, dom: DomId, pfn: u64, byte: u8) {
    let mut m = host.map_pages(dom, &[pfn], true).unwrap();
    m.page_mut(0).fill(byte);
}

/// (pfn, type, body) of every PAGE_DATA entry of a stream, in order.
fn entries(stream: &[u8]) -> Vec<(u64, PageType, Option<Vec<u8>>)> {
    let mut r = LibxcReader::new(stream).unwrap();
    let mut out = Vec::new();
    while let Some(rec) = r.next_record().unwrap() {
        if let Record::PageData(pd) = rec {
            let mut bodies = pd.pages();
            for e in &pd.entries {
                let body = e.ty.has_data().then(|| bodies.next().unwrap().to_vec());
                out.push((e.pfn, e.ty, body));
            }
        }
    }
    out
}

/// A 2 MiB HVM domain, built empty on a simulated host of its own (the
/// directory lives as long as the host is used).
fn small_hvm_domain(name: &str) -> (tempfile::TempDir, SimHost, DomId) {
    let dir = tempfile::tempdir().unwrap();
    let host = SimHost::open(dir.path()).unwrap();
    let dom = host
        .build_domain(&DomainSpec {
            name: name.into(),
            guest_type: GuestType::Hvm,
            max_pfn: 511,
            max_vcpu_id: 0,
            config: None,
        })
        .unwrap()
        .domid;
    (dir, host, dom)
}

#[test]
fn zero_pages_go_without_data_on_their_first_send_only() {
    let (_dir, host, dom) = small_hvm_domain("pager");
    // RAM below the VGA hole (0xA0..0xC0 is a hole in the sim, as on Xen).
    let pfns: Vec<u64> = (0..0xA0).collect();
    host.populate(dom, &pfns).unwrap();
    // A freshly populated frame is zero (what XALLOC relies on).
    for chunk in pfns.chunks(64) {
        let m = host.map_pages(dom, chunk, false).unwrap();
        assert!((0..chunk.len()).all(|i| m.page(i).is_zero()));
    }
    write_page(&host, dom, 1, 0xaa);
    // A single non-zero byte at the end of a page is not zero.
    host.map_pages(dom, &[4], true)
        .unwrap()
        .page_mut(0)
        .write_u32(4092, 1 << 24);

    let info = host.domain_info(dom).unwrap();
    let ops = HvmOps::new(&info);
    let header = DomainHeader {
        domain_type: DomainType::X86Hvm,
        page_shift: 12,
        xen_major: 4,
        xen_minor: 17,
    };
    let mut w = LibxcWriter::new(Vec::new(), &header).unwrap();
    w.write_record(&Record::StaticDataEnd).unwrap();
    let mut hooks = DirectHooks;
    let mut pager = HvPager::new(&host, dom, &ops, w, &mut hooks);
    // Round A: 1 and 4 have data, 2 and 3 are zero.
    assert_eq!(pager.send_batch(&[1, 2, 3, 4]).unwrap(), 4);
    assert_eq!(pager.zero_pages_total(), 2);
    // 1 becomes zero, 2 gets data; 3 stays zero; 5 is zero, never sent.
    write_page(&host, dom, 1, 0);
    write_page(&host, dom, 2, 0x55);
    assert_eq!(pager.send_batch(&[1, 2, 3, 5]).unwrap(), 4);
    assert_eq!(pager.zero_pages_total(), 3);
    let stream = pager.finish().finish().unwrap();

    let got = entries(&stream);
    let kinds: Vec<(u64, PageType, Option<u8>)> = got
        .iter()
        .map(|(p, t, b)| (*p, *t, b.as_ref().map(|b| b[0])))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (1, PageType::NOTAB, Some(0xaa)),
            (2, PageType::XALLOC, None),
            (3, PageType::XALLOC, None),
            (4, PageType::NOTAB, Some(0)),
            // Sent before: with data, even when zero now.
            (1, PageType::NOTAB, Some(0)),
            (2, PageType::NOTAB, Some(0x55)),
            (3, PageType::NOTAB, Some(0)),
            (5, PageType::XALLOC, None),
        ]
    );
    assert!(got[4].2.as_ref().unwrap().iter().all(|&b| b == 0));
    assert_eq!(got[3].2.as_ref().unwrap()[4095], 1);
    host.destroy(dom).unwrap();
}

#[test]
fn hvm_holes_never_sent_are_left_out() {
    let (_dir, host, dom) = small_hvm_domain("holes");
    host.populate(dom, &[0x9F, 0xC0]).unwrap();
    write_page(&host, dom, 0x9F, 0x11);
    let info = host.domain_info(dom).unwrap();
    // Xen's layout: the P2M spans the holes up to the special pages.
    assert_eq!(info.max_pfn, 0xFEFFF);
    let ops = HvmOps::new(&info);
    let header = DomainHeader {
        domain_type: DomainType::X86Hvm,
        page_shift: 12,
        xen_major: 4,
        xen_minor: 17,
    };
    let mut w = LibxcWriter::new(Vec::new(), &header).unwrap();
    w.write_record(&Record::StaticDataEnd).unwrap();
    let mut hooks = DirectHooks;
    let mut pager = HvPager::new(&host, dom, &ops, w, &mut hooks);
    // The VGA hole around two RAM pages: only the RAM pages travel.
    let batch: Vec<u64> = (0x9F..=0xC0).collect();
    assert_eq!(pager.send_batch(&batch).unwrap(), 2);
    let before = pager.bytes_written();
    // A batch of holes only writes nothing (not an empty PAGE_DATA).
    let holes: Vec<u64> = (0x200..0x600).collect();
    assert_eq!(pager.send_batch(&holes).unwrap(), 0);
    assert_eq!(pager.bytes_written(), before);
    let stream = pager.finish().finish().unwrap();
    let got: Vec<(u64, PageType)> = entries(&stream).iter().map(|e| (e.0, e.1)).collect();
    assert_eq!(got, vec![(0x9F, PageType::NOTAB), (0xC0, PageType::XALLOC)]);
    host.destroy(dom).unwrap();
}
