//! A restore of arbitrary bytes into a simulated host, within small receiver
//! limits: it may refuse them, never panic, and never leave a domain behind.
//! Bytes starting with the libxc marker are read as a bare libxc stream (of
//! a 16 MiB guest, for HVM), anything else as an xl image.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rxmigrate::hv::sim::SimHost;
use rxmigrate::hv::Hypervisor;
use rxmigrate::migrate::{self, RestoreImageOptions};
use rxmigrate::restore::{Limits, NoHooks};
use std::sync::OnceLock;

/// One host for the whole run, in its own directory.
fn host() -> &'static SimHost {
    static HOST: OnceLock<SimHost> = OnceLock::new();
    HOST.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("rxmigrate-fuzz-restore-{}", std::process::id()));
        SimHost::open(&dir).expect("open the simulated host")
    })
}

/// Small limits keep each input cheap: guests of up to 256 MiB (sparse:
/// only pages the input carries are touched), records of up to 1 MiB.
fn limits() -> Limits {
    let mut l = Limits::new(256 << 20);
    l.max_vcpus = 8;
    l.max_record = 1 << 20;
    l.max_page_entries = 4096;
    l.image.max_config = 64 << 10;
    l.image.max_emulator_context = 1 << 20;
    l.image.max_xenstore_data = 64 << 10;
    l.image.max_xenstore_pairs = 256;
    l
}

fuzz_target!(|data: &[u8]| {
    let hv = host();
    let raw = data.first() == Some(&0xff);
    let opts = RestoreImageOptions {
        raw,
        name: None,
        max_pfn: raw.then_some(4095),
        trust_config: false,
        limits: Some(limits()),
    };
    let mut input = data;
    if let Ok(out) = migrate::restore_image(hv, &mut input, &opts, &mut NoHooks) {
        hv.destroy(out.domid).expect("destroy the restored domain");
    }
    let left = hv.list_domains().expect("list domains");
    assert!(left.is_empty(), "domains left behind: {left:?}");
});
