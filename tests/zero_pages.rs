//! Zero pages: a sim guest whose memory is mostly zero saves its zero pages
//! as XALLOC entries without data (NOTAB pages, first send), the image is
//! what `inspect` and `verify` accept, and the restored guest's memory
//! equals a reference run's, bit for bit.

mod sim_util;

use rxmigrate::hv::sim::{check, TrackingMode, WorkloadKind};
use rxmigrate::hv::{GuestType, Hypervisor, PageType};
use rxmigrate::migrate::{self, RestoreImageOptions};
use rxmigrate::restore::NoHooks;
use rxmigrate::stream::{LibxcReader, Record, PAGE_SIZE};
use sim_util::{cfg, copy_pages, gfns, TestHost};

fn is_zero(p: &[u8]) -> bool {
    p.iter().all(|&b| b == 0)
}

#[test]
fn mostly_zero_guest_saves_zero_pages_without_data_and_restores_exactly() {
    for t in [GuestType::Pv, GuestType::Hvm] {
        let mut a = TestHost::new();
        let b = TestHost::new();
        // A fresh idle guest: its data pages were never written.
        let mut c = cfg("z", t, 32, WorkloadKind::Idle, TrackingMode::Soft);
        c.paused = false;
        let dom = a.create(&c);
        let img = a.save_image(dom);
        let step = a.host.step(dom).expect("step");

        // The source's memory, suspended as it was saved.
        let g = gfns(&a.host, dom);
        let n = g.len();
        let all: Vec<u64> = (0..n as u64).collect();
        let mut mem = vec![0u8; n * PAGE_SIZE];
        copy_pages(&a.host, dom, &g, &all, &mut mem);
        let page = |pfn: u64| &mem[pfn as usize * PAGE_SIZE..(pfn as usize + 1) * PAGE_SIZE];

        // Walk the libxc stream: every XALLOC pfn is zero in the guest and
        // carries no data; no NOTAB page that travels with data is zero
        // (each pfn is sent once in a non-live save).
        let mut r = img.as_slice();
        rxmigrate::image::read_start(&mut r).expect("xl and libxl headers");
        let mut reader = LibxcReader::new(&mut r).expect("libxc header");
        let (mut xalloc, mut with_data) = (0u64, 0u64);
        while let Some(rec) = reader.next_record().expect("record") {
            let Record::PageData(pd) = rec else {
                if matches!(rec, Record::End) {
                    break;
                }
                continue;
            };
            assert_eq!(pd.data.len(), pd.pages_with_data() * PAGE_SIZE);
            let mut bodies = pd.pages();
            for e in &pd.entries {
                if e.ty == PageType::XALLOC {
                    xalloc += 1;
                    assert!(
                        is_zero(page(e.pfn)),
                        "{t}: XALLOC pfn {:#x} is not zero",
                        e.pfn
                    );
                } else if e.ty.has_data() {
                    with_data += 1;
                    let body = bodies.next().expect("a body per data entry");
                    if e.ty == PageType::NOTAB {
                        assert!(!is_zero(body), "{t}: zero pfn {:#x} sent with data", e.pfn);
                    }
                }
            }
        }
        // Half the guest's RAM at least (an HVM P2M is mostly holes, which
        // are not in the stream at all).
        let ram = (32u64 << 20) / PAGE_SIZE as u64;
        assert!(
            xalloc > ram / 2,
            "{t}: only {xalloc} XALLOC entries for {ram} pages of RAM ({n} pfns)"
        );
        assert!(with_data > 0, "{t}: no page went with data");

        // inspect shows them, verify accepts the image.
        let mut text = Vec::new();
        let summary =
            rxmigrate::inspect::inspect(&mut img.as_slice(), false, &mut text).expect("inspect");
        let libxc = summary.libxc.expect("libxc summary");
        assert_eq!(libxc.pages_by_type.get("XALLOC").copied(), Some(xalloc));
        assert!(String::from_utf8_lossy(&text).contains("XALLOC"));
        rxmigrate::inspect::verify(&mut img.as_slice(), false, &mut Vec::new()).expect("verify");

        // Restored elsewhere, the guest's memory is the reference's.
        a.host.destroy(dom).expect("destroy source");
        a.doms.clear();
        let out = migrate::restore_image(
            &b.host,
            &mut img.as_slice(),
            &RestoreImageOptions::default(),
            &mut NoHooks,
        )
        .expect("restore");
        b.host.run_until(out.domid, step + 100).expect("run on");
        let rep = check(&b.host, out.domid).expect("oracle");
        assert!(
            rep.ok(),
            "{t}: {} pages differ: {:?}",
            rep.n_differing,
            rep.differing
        );
        b.host.destroy(out.domid).expect("destroy");
    }
}
