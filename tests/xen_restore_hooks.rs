//! What the restore engine asks of a host that builds domains itself (the
//! Xen backend): its event channels go into the guest, the grant table is
//! seeded with the rings, and the rings are connected once the restore is
//! done. Checked on the simulated host behind a recording wrapper.

mod sim_util;

use rxmigrate::bitmap::Bitmap;
use rxmigrate::hv::sim::{SimHost, WorkloadKind};
use rxmigrate::hv::*;
use rxmigrate::migrate::{self, RestoreImageOptions};
use rxmigrate::restore::NoHooks;
use rxmigrate::x86::{start_info, vcpu};
use sim_util::TestHost;
use std::sync::Mutex;

const STORE_EVTCHN: u32 = 11;
const CONSOLE_EVTCHN: u32 = 12;

/// What start_platform was handed: domain, device model state, config.
type PlatformCall = (DomId, Option<DeviceModelState>, Option<serde_json::Value>);

/// The simulated host, plus the calls a building host answers.
struct Builder<'a> {
    sim: &'a SimHost,
    calls: Mutex<Vec<String>>,
    /// A domain reported as Xen reports a PV domain libxl just built: no
    /// P2M yet, max pfn 0.
    fresh: Option<DomId>,
    /// Refuse images (check_restore_config) / fail start_platform.
    refuse: bool,
    fail_platform: bool,
    /// What start_platform was handed.
    platform: Mutex<Option<PlatformCall>>,
}

impl<'a> Builder<'a> {
    fn new(sim: &'a SimHost) -> Self {
        Builder {
            sim,
            calls: Mutex::new(Vec::new()),
            fresh: None,
            refuse: false,
            fail_platform: false,
            platform: Mutex::new(None),
        }
    }
}

impl Hypervisor for Builder<'_> {
    fn describe(&self) -> String {
        self.sim.describe()
    }
    fn xen_version(&self) -> (u32, u32) {
        self.sim.xen_version()
    }
    fn list_domains(&self) -> Result<Vec<DomainInfo>> {
        self.sim.list_domains()
    }
    fn domain_info(&self, d: DomId) -> Result<DomainInfo> {
        let mut i = self.sim.domain_info(d)?;
        if self.fresh == Some(d) {
            i.max_pfn = 0;
        }
        Ok(i)
    }
    fn rename(&self, d: DomId, n: &str) -> Result<()> {
        self.sim.rename(d, n)
    }
    fn pause(&self, d: DomId) -> Result<()> {
        self.sim.pause(d)
    }
    fn unpause(&self, d: DomId) -> Result<()> {
        self.sim.unpause(d)
    }
    fn suspend(&self, d: DomId) -> Result<()> {
        self.sim.suspend(d)
    }
    fn resume(&self, d: DomId, c: bool) -> Result<()> {
        self.sim.resume(d, c)
    }
    fn destroy(&self, d: DomId) -> Result<()> {
        self.sim.destroy(d)
    }
    fn logdirty_enable(&self, d: DomId) -> Result<()> {
        self.sim.logdirty_enable(d)
    }
    fn logdirty_disable(&self, d: DomId) -> Result<()> {
        self.sim.logdirty_disable(d)
    }
    fn logdirty_clean(&self, d: DomId, o: &mut Bitmap, f: bool) -> Result<u64> {
        self.sim.logdirty_clean(d, o, f)
    }
    fn logdirty_peek(&self, d: DomId, o: &mut Bitmap) -> Result<u64> {
        self.sim.logdirty_peek(d, o)
    }
    fn page_types(&self, d: DomId, g: &[u64], o: &mut [PageType]) -> Result<()> {
        self.sim.page_types(d, g, o)
    }
    fn map_pages<'a>(&'a self, d: DomId, g: &[u64], w: bool) -> Result<Box<dyn PageMapping + 'a>> {
        self.sim.map_pages(d, g, w)
    }
    fn guest_width(&self, d: DomId) -> Result<u32> {
        self.sim.guest_width(d)
    }
    fn set_guest_width(&self, d: DomId, w: u32) -> Result<()> {
        self.sim.set_guest_width(d, w)
    }
    fn pv_p2m(&self, d: DomId) -> Result<PvP2m> {
        self.sim.pv_p2m(d)
    }
    fn pv_vcpu(&self, d: DomId, v: u32) -> Result<PvVcpuState> {
        self.sim.pv_vcpu(d, v)
    }
    fn set_pv_vcpu(&self, d: DomId, v: u32, s: &PvVcpuState) -> Result<()> {
        self.sim.set_pv_vcpu(d, v, s)
    }
    fn shared_info(&self, d: DomId) -> Result<Vec<u8>> {
        self.sim.shared_info(d)
    }
    fn shared_info_frame(&self, d: DomId) -> Result<u64> {
        self.sim.shared_info_frame(d)
    }
    fn set_shared_info(&self, d: DomId, p: &[u8]) -> Result<()> {
        self.sim.set_shared_info(d, p)
    }
    fn pin_table(&self, d: DomId, m: u64, l: u8) -> Result<()> {
        self.sim.pin_table(d, m, l)
    }
    fn hvm_context(&self, d: DomId) -> Result<Vec<u8>> {
        self.sim.hvm_context(d)
    }
    fn set_hvm_context(&self, d: DomId, b: &[u8]) -> Result<()> {
        self.sim.set_hvm_context(d, b)
    }
    fn hvm_param(&self, d: DomId, i: u32) -> Result<u64> {
        self.sim.hvm_param(d, i)
    }
    fn set_hvm_param(&self, d: DomId, i: u32, v: u64) -> Result<()> {
        self.sim.set_hvm_param(d, i, v)
    }
    fn tsc_info(&self, d: DomId) -> Result<TscInfo> {
        self.sim.tsc_info(d)
    }
    fn set_tsc_info(&self, d: DomId, t: &TscInfo) -> Result<()> {
        self.sim.set_tsc_info(d, t)
    }
    fn cpu_policy(&self, d: DomId) -> Result<CpuPolicy> {
        self.sim.cpu_policy(d)
    }
    fn set_cpu_policy(&self, d: DomId, p: &CpuPolicy) -> Result<()> {
        self.sim.set_cpu_policy(d, p)
    }
    fn create_domain(&self, s: &DomainSpec) -> Result<DomId> {
        self.sim.create_domain(s)
    }
    fn populate(&self, d: DomId, p: &[u64]) -> Result<Vec<u64>> {
        self.sim.populate(d, p)
    }
    fn domain_config(&self, d: DomId) -> Result<Option<serde_json::Value>> {
        self.sim.domain_config(d)
    }
    fn domain_max_memory(&self, d: DomId) -> Result<u64> {
        self.sim.domain_max_memory(d)
    }

    fn restore_channels(&self, d: DomId) -> Result<Option<(u32, u32)>> {
        self.calls.lock().unwrap().push(format!("channels {d}"));
        Ok(Some((STORE_EVTCHN, CONSOLE_EVTCHN)))
    }
    fn seed_grant_table(&self, d: DomId, cg: u64, cd: u32, sg: u64, sd: u32) -> Result<()> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("seed {d} console {cg:#x}@{cd} store {sg:#x}@{sd}"));
        Ok(())
    }
    fn restore_finished(&self, d: DomId, sg: u64, cg: u64) -> Result<()> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("finished {d} store {sg:#x} console {cg:#x}"));
        Ok(())
    }
    fn check_restore_config(&self, _config: &serde_json::Value) -> Result<()> {
        if self.refuse {
            return Err(HvError::Refused("this guest needs xl".into()));
        }
        Ok(())
    }
    fn start_platform(
        &self,
        d: DomId,
        state: Option<&DeviceModelState>,
        config: Option<&serde_json::Value>,
    ) -> Result<()> {
        self.calls.lock().unwrap().push(format!("platform {d}"));
        *self.platform.lock().unwrap() = Some((d, state.cloned(), config.cloned()));
        if self.fail_platform {
            return Err(HvError::op(d, "device_model", "QEMU exited with status 1"));
        }
        Ok(())
    }
}

fn saved_image(t: GuestType) -> Vec<u8> {
    let mut a = TestHost::new();
    let mut c = rxmigrate::hv::sim::GuestConfig::new("g", t, 16, WorkloadKind::Uniform);
    c.seed = 3;
    let dom = a.create(&c);
    a.save_image(dom)
}

#[test]
fn pv_restore_uses_the_hosts_channels_and_connects_the_rings() {
    let img = saved_image(GuestType::Pv);
    let b = TestHost::new();
    let host = Builder::new(&b.host);
    let out = migrate::restore_image(
        &host,
        &mut img.as_slice(),
        &RestoreImageOptions::default(),
        &mut NoHooks,
    )
    .expect("restore");
    let d = out.domid;
    let calls = host.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        vec![
            format!("channels {d}"),
            format!(
                "seed {d} console {:#x}@0 store {:#x}@0",
                out.console_gfn, out.store_gfn
            ),
            format!(
                "finished {d} store {:#x} console {:#x}",
                out.store_gfn, out.console_gfn
            ),
            format!("platform {d}"),
        ]
    );
    // The guest's start_info names the host's channels and the new frames.
    let st = b.host.pv_vcpu(d, 0).unwrap();
    let si_mfn = vcpu::Context64::new(&st.basic).unwrap().reg(vcpu::Reg::Rdx);
    let si = b
        .host
        .map_pages(d, &[si_mfn], false)
        .unwrap()
        .page(0)
        .to_vec();
    assert_eq!(start_info::store_evtchn(&si), STORE_EVTCHN);
    assert_eq!(start_info::console_evtchn(&si), CONSOLE_EVTCHN);
    assert_eq!(start_info::store_mfn(&si), out.store_gfn);
    assert_eq!(start_info::console_mfn(&si), out.console_gfn);
    b.host.destroy(d).unwrap();
}

#[test]
fn hvm_restore_sets_the_hosts_channels_as_params() {
    let img = saved_image(GuestType::Hvm);
    let b = TestHost::new();
    let host = Builder::new(&b.host);
    let out = migrate::restore_image(
        &host,
        &mut img.as_slice(),
        &RestoreImageOptions::default(),
        &mut NoHooks,
    )
    .expect("restore");
    assert_eq!(b.host.hvm_param(out.domid, 2).unwrap(), STORE_EVTCHN as u64);
    assert_eq!(
        b.host.hvm_param(out.domid, 18).unwrap(),
        CONSOLE_EVTCHN as u64
    );
    let calls = host.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert!(
        calls[2].starts_with(&format!("finished {}", out.domid)),
        "{calls:?}"
    );
    b.host.destroy(out.domid).unwrap();
}

#[test]
fn xl_config_from_the_host_is_written_whole() {
    let info = DomainInfo {
        domid: 3,
        name: "g".into(),
        guest_type: GuestType::Pv,
        max_pfn: 32767,
        max_vcpu_id: 0,
        online_vcpus: vec![0],
        paused: false,
        shutdown: None,
    };
    let libxl = serde_json::json!({"c_info": {"type": "pv", "name": "g", "uuid": "u"},
                                   "b_info": {"max_vcpus": 1, "max_memkb": 131072, "target_memkb": 131072},
                                   "disks": [{"vdev": "xvda"}]});
    let v =
        rxmigrate::image::config_json(&info, Some(serde_json::json!({ "libxl": libxl.clone() })));
    assert_eq!(v, libxl);
    let f = rxmigrate::image::config_facts(&v);
    assert_eq!(
        (f.name.as_deref(), f.max_pfn, f.max_vcpu_id),
        (Some("g"), Some(32767), 0)
    );
    // Any other host config still travels under "rxmigrate".
    let v = rxmigrate::image::config_json(&info, Some(serde_json::json!({"seed": 1})));
    assert_eq!(v["rxmigrate"]["seed"], 1);
    assert_eq!(v["c_info"]["name"], "g");
}

/// Restores a saved image of type `t` into a domain the toolstack built (as
/// libxl does before running the helper), reported as Xen reports it then.
/// Returns the host, the domain, the outcome and the hook calls made.
fn restore_into_toolstack_domain(
    t: GuestType,
) -> (
    TestHost,
    DomId,
    rxmigrate::restore::RestoreOutcome,
    Vec<String>,
) {
    use rxmigrate::restore::{self, RestoreParams, Target};
    let img = saved_image(t);
    let b = TestHost::new();
    let mut input = img.as_slice();
    let config = rxmigrate::image::read_start(&mut input).unwrap().unwrap();
    let facts = rxmigrate::image::config_facts(&config);
    let d = b
        .host
        .create_domain(&DomainSpec {
            name: "g".into(),
            guest_type: t,
            max_pfn: facts.max_pfn.unwrap(),
            max_vcpu_id: 0,
            config: facts.host_config.clone(),
            pvh: false,
        })
        .unwrap();
    let host = Builder {
        fresh: Some(d),
        ..Builder::new(&b.host)
    };
    let params = RestoreParams {
        store_evtchn: 5,
        store_domid: 0,
        console_evtchn: 6,
        console_domid: 0,
    };
    let mut reader = rxmigrate::stream::LibxcReader::new(&mut input).unwrap();
    let out = restore::restore(
        &host,
        &mut reader,
        Target::Existing(d),
        params,
        &mut NoHooks,
    )
    .unwrap_or_else(|e| panic!("restore into the fresh {t} domain: {e}"));
    assert_eq!(out.domid, d);
    let calls = host.calls.lock().unwrap().clone();
    (b, d, out, calls)
}

#[test]
fn existing_pv_domain_without_a_p2m_is_sized_by_the_stream() {
    // Xen reports a PV domain libxl just built without a P2M.
    let (b, d, out, calls) = restore_into_toolstack_domain(GuestType::Pv);
    // libxl's channels, no host-made ones; the grant table is seeded, the
    // rings are libxl's to connect.
    assert_eq!(
        calls,
        vec![format!(
            "seed {d} console {:#x}@0 store {:#x}@0",
            out.console_gfn, out.store_gfn
        )]
    );
    let st = b.host.pv_vcpu(d, 0).unwrap();
    let si_mfn = vcpu::Context64::new(&st.basic).unwrap().reg(vcpu::Reg::Rdx);
    let si = b
        .host
        .map_pages(d, &[si_mfn], false)
        .unwrap()
        .page(0)
        .to_vec();
    assert_eq!(start_info::store_evtchn(&si), 5);
    assert_eq!(start_info::console_evtchn(&si), 6);
    b.host.destroy(d).unwrap();
}

#[test]
fn existing_hvm_domain_grows_with_the_stream() {
    // Xen reports an HVM domain libxl built for a restore with nothing
    // mapped yet.
    let (b, d, out, _) = restore_into_toolstack_domain(GuestType::Hvm);
    assert_eq!(b.host.hvm_param(d, 2).unwrap(), 5);
    assert_eq!(b.host.hvm_param(d, 18).unwrap(), 6);
    assert!(out.pages > 0);
    b.host.destroy(d).unwrap();
}

/// A saved HVM image that also carries a device model's state, as libxl
/// writes it after the libxc stream.
fn hvm_image_with_device_model(dm: &DeviceModelState) -> Vec<u8> {
    let mut img = saved_image(GuestType::Hvm);
    // The image ends with libxl's END record (type 0, length 0).
    assert_eq!(img[img.len() - 8..], [0u8; 8]);
    img.truncate(img.len() - 8);
    rxmigrate::image::write_device_model(&mut img, dm).unwrap();
    rxmigrate::image::write_end(&mut img).unwrap();
    img
}

fn device_model() -> DeviceModelState {
    DeviceModelState {
        emulator_id: 2,
        xenstore: vec![("physmap/f0000000/size".into(), "800000".into())],
        context: b"QEVM device state".to_vec(),
    }
}

#[test]
fn hvm_restore_hands_the_device_model_and_config_to_the_host() {
    let img = hvm_image_with_device_model(&device_model());
    let b = TestHost::new();
    let host = Builder::new(&b.host);
    let opts = RestoreImageOptions {
        name: Some("copy".into()),
        ..Default::default()
    };
    let out =
        migrate::restore_image(&host, &mut img.as_slice(), &opts, &mut NoHooks).expect("restore");
    let (d, state, config) = host.platform.lock().unwrap().clone().unwrap();
    assert_eq!(d, out.domid);
    assert_eq!(state, Some(device_model()));
    // The config names the domain as it is now called.
    assert_eq!(config.unwrap()["c_info"]["name"], "copy");
    // The device model comes after the rings are connected.
    let calls = host.calls.lock().unwrap().clone();
    assert_eq!(calls.last().unwrap(), &format!("platform {d}"), "{calls:?}");
    b.host.destroy(out.domid).unwrap();
}

/// A restore of `img` that must fail on a host set up by `setup`: returns
/// the error, the host's recorded calls and what start_platform was handed,
/// after checking that no domain was left behind.
fn failed_restore(
    img: &[u8],
    setup: impl FnOnce(&mut Builder),
) -> (String, Vec<String>, Option<PlatformCall>) {
    let b = TestHost::new();
    let before = b.host.list_domains().unwrap().len();
    let mut host = Builder::new(&b.host);
    setup(&mut host);
    let e = migrate::restore_image(
        &host,
        &mut &img[..],
        &RestoreImageOptions::default(),
        &mut NoHooks,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(b.host.list_domains().unwrap().len(), before, "{e}");
    let calls = host.calls.lock().unwrap().clone();
    let platform = host.platform.lock().unwrap().clone();
    (e, calls, platform)
}

#[test]
fn a_device_model_that_fails_leaves_no_domain() {
    let img = hvm_image_with_device_model(&device_model());
    let (e, _, platform) = failed_restore(&img, |h| h.fail_platform = true);
    assert!(e.contains("QEMU exited with status 1"), "{e}");
    assert!(platform.is_some());
}

#[test]
fn a_refused_config_restores_nothing() {
    let (e, calls, _) = failed_restore(&saved_image(GuestType::Hvm), |h| h.refuse = true);
    assert_eq!(e, "this guest needs xl");
    assert!(calls.is_empty());
}

#[test]
fn receiver_whose_device_model_fails_sends_no_ready() {
    use rxmigrate::stream::handshake;
    let mut stream = hvm_image_with_device_model(&device_model());
    stream.extend_from_slice(handshake::PERMISSION_TO_GO);
    let b = TestHost::new();
    let before = b.host.list_domains().unwrap().len();
    let host = Builder {
        fail_platform: true,
        ..Builder::new(&b.host)
    };
    let mut acks = Vec::new();
    let opts = migrate::ReceiveOptions::default();
    let e = migrate::receive(&host, stream.as_slice(), &mut acks, &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("QEMU exited"), "{e}");
    // Only the banner went back: the sender keeps (and resumes) its guest.
    assert_eq!(acks, handshake::BANNER);
    assert_eq!(b.host.list_domains().unwrap().len(), before);
}
