//! Shared helpers for the simulated-host tests.
#![allow(dead_code)]

use rxmigrate::bitmap::Bitmap;
use rxmigrate::hv::sim::{GuestConfig, SimHost, TrackingMode, WorkloadKind};
use rxmigrate::hv::{DomId, GuestType, Hypervisor};
use std::sync::Once;

pub const MODES: [TrackingMode; 2] = [TrackingMode::Uffd, TrackingMode::Soft];

static EXE: Once = Once::new();

/// A host in a temporary directory; destroys its domains on drop.
pub struct TestHost {
    pub host: SimHost,
    pub doms: Vec<DomId>,
    _dir: tempfile::TempDir,
}

impl TestHost {
    pub fn new() -> TestHost {
        EXE.call_once(|| {
            // Set once, before any guest is started, from the test binary's only thread doing so.
            std::env::set_var("RXMIGRATE_EXE", env!("CARGO_BIN_EXE_rxmigrate"));
            // Guests stop by themselves if this test process is killed.
            std::env::set_var("RXMIGRATE_SIM_OWNER_PID", std::process::id().to_string());
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let host = SimHost::open(dir.path()).expect("open host");
        TestHost {
            host,
            doms: Vec::new(),
            _dir: dir,
        }
    }

    pub fn create(&mut self, cfg: &GuestConfig) -> DomId {
        let id = self.host.create_guest(cfg).expect("create guest");
        self.doms.push(id);
        id
    }

    /// An xl save image of `dom`, saved suspended (xen4, not live).
    pub fn save_image(&self, dom: DomId) -> Vec<u8> {
        let mut img = Vec::new();
        let mut p = rxmigrate::precopy::by_name("xen4").expect("policy");
        rxmigrate::migrate::save_image(
            &self.host,
            dom,
            &mut img,
            p.as_mut(),
            rxmigrate::save::SaveOptions { live: false },
            &mut rxmigrate::save::DirectHooks,
            false,
        )
        .expect("save");
        img
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        for d in self.doms.drain(..) {
            let _ = self.host.destroy(d);
        }
    }
}

pub fn cfg(name: &str, t: GuestType, mib: u64, w: WorkloadKind, mode: TrackingMode) -> GuestConfig {
    let mut c = GuestConfig::new(name, t, mib, w);
    c.seed = 42;
    c.rate = 0;
    c.tracking = Some(mode);
    c.paused = true;
    c
}

pub fn bitmap_for(host: &SimHost, dom: DomId) -> Bitmap {
    Bitmap::new(host.domain_info(dom).expect("info").p2m_size())
}

/// Pfn → gfn (PV: mfn through the guest's P2M; HVM: identity).
pub fn gfns(host: &SimHost, dom: DomId) -> Vec<u64> {
    let info = host.domain_info(dom).expect("info");
    match info.guest_type {
        GuestType::Pv => host.pv_p2m(dom).expect("p2m").p2m,
        GuestType::Hvm => (0..info.p2m_size()).collect(),
    }
}

/// Copy the listed pfns of a guest into `buf` (pfn-indexed, 4 KiB each).
pub fn copy_pages(host: &SimHost, dom: DomId, gfns: &[u64], pfns: &[u64], buf: &mut [u8]) {
    let mut types = vec![rxmigrate::hv::PageType::NOTAB; 0];
    for chunk in pfns.chunks(1024) {
        let g: Vec<u64> = chunk.iter().map(|&p| gfns[p as usize]).collect();
        types.resize(g.len(), rxmigrate::hv::PageType::NOTAB);
        host.page_types(dom, &g, &mut types).expect("types");
        let sel: Vec<(u64, u64)> = chunk
            .iter()
            .zip(&g)
            .zip(&types)
            .filter(|(_, t)| t.has_data())
            .map(|((&p, &g), _)| (p, g))
            .collect();
        let gl: Vec<u64> = sel.iter().map(|x| x.1).collect();
        let m = host.map_pages(dom, &gl, false).expect("map");
        for (i, (p, _)) in sel.iter().enumerate() {
            let o = *p as usize * 4096;
            m.page(i).copy_to(&mut buf[o..o + 4096]);
        }
    }
}
