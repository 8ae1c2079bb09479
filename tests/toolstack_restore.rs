//! What the restore engine asks of the toolstack, and what the simulated
//! host's toolstack then holds: the domain is built with its rings' event
//! channels, which go into the guest; its grant table is seeded with the
//! rings; it is introduced to xenstore with the frames the stream named;
//! its device model gets the state the image carried; a config the host
//! cannot run is refused before anything is built. The engine's calls are
//! recorded by a wrapper around the simulated toolstack, their effects read
//! back from the simulated host.

mod sim_util;

use rxmigrate::bitmap::Bitmap;
use rxmigrate::hv::sim::toolstack::{GNTTAB_RESERVED_CONSOLE, GNTTAB_RESERVED_XENSTORE};
use rxmigrate::hv::sim::{GrantEntry, SimHost, WorkloadKind};
use rxmigrate::hv::*;
use rxmigrate::migrate::{self, RestoreImageOptions};
use rxmigrate::restore::NoHooks;
use rxmigrate::x86::{start_info, vcpu};
use sim_util::TestHost;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// What start_platform was handed: domain, device model state, config.
type PlatformCall = (DomId, Option<DeviceModelState>, Option<DomainConfig>);

/// The simulated toolstack, recording the calls the engine makes.
struct Recorder<'a> {
    sim: &'a SimHost,
    calls: Mutex<Vec<String>>,
    /// Refuse images (check_restore_config) / fail start_platform.
    refuse: bool,
    fail_platform: bool,
    /// The device model state a save finds (instead of the guest's).
    saved_dm: Option<DeviceModelState>,
    /// What start_platform was handed.
    platform: Mutex<Option<PlatformCall>>,
}

impl<'a> Recorder<'a> {
    fn new(sim: &'a SimHost) -> Self {
        Recorder {
            sim,
            calls: Mutex::new(Vec::new()),
            refuse: false,
            fail_platform: false,
            saved_dm: None,
            platform: Mutex::new(None),
        }
    }
    fn host(&'a self) -> Host<'a> {
        Host {
            hv: self.sim,
            ts: self,
        }
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn record(&self, c: String) {
        self.calls.lock().unwrap().push(c);
    }
}

impl Toolstack for Recorder<'_> {
    fn domain_config(&self, d: DomId) -> Result<DomainConfig> {
        self.sim.domain_config(d)
    }
    fn check_restore_config(&self, config: &DomainConfig) -> Result<()> {
        if self.refuse {
            return Err(HvError::Refused("this guest needs xl".into()));
        }
        self.sim.check_restore_config(config)
    }
    fn build_domain(&self, spec: &DomainSpec) -> Result<BuiltDomain> {
        let b = self.sim.build_domain(spec)?;
        self.record(format!(
            "build {} ports {}/{}",
            b.domid, b.channels.store_port, b.channels.console_port
        ));
        Ok(b)
    }
    fn seed_grant_table(&self, d: DomId, s: &GrantSeed) -> Result<()> {
        self.record(format!(
            "seed {d} console {:#x}@{} store {:#x}@{}",
            s.console_gfn, s.console_domid, s.store_gfn, s.store_domid
        ));
        self.sim.seed_grant_table(d, s)
    }
    fn restore_finished(&self, d: DomId, r: &Rings) -> Result<()> {
        self.record(format!(
            "finished {d} store {:#x} console {:#x}",
            r.store_gfn, r.console_gfn
        ));
        self.sim.restore_finished(d, r)
    }
    fn device_model_dirty_log(&self, d: DomId, enable: bool) -> Result<()> {
        self.sim.device_model_dirty_log(d, enable)
    }
    fn device_model_state(&self, d: DomId) -> Result<Option<DeviceModelState>> {
        match &self.saved_dm {
            Some(dm) => Ok(Some(dm.clone())),
            None => self.sim.device_model_state(d),
        }
    }
    fn start_platform(
        &self,
        d: DomId,
        state: Option<&DeviceModelState>,
        config: Option<&DomainConfig>,
    ) -> Result<()> {
        self.record(format!("platform {d}"));
        *self.platform.lock().unwrap() = Some((d, state.cloned(), config.cloned()));
        if self.fail_platform {
            return Err(HvError::op(d, "device_model", "QEMU exited with status 1"));
        }
        self.sim.start_platform(d, state, config)
    }
    fn xenstore_read(&self, path: &str) -> Result<Option<String>> {
        self.sim.xenstore_read(path)
    }
}

/// The simulated hypervisor, reporting one domain (if any) as Xen reports
/// a PV domain libxl just built: no P2M yet, max pfn 0; counting calls.
struct Fresh<'a> {
    sim: &'a SimHost,
    fresh: Option<DomId>,
    /// map_pages calls made.
    maps: AtomicUsize,
    /// pv_p2m calls made (each reads a PV guest's whole P2M).
    p2m_reads: AtomicUsize,
}

impl<'a> Fresh<'a> {
    fn new(sim: &'a SimHost, fresh: Option<DomId>) -> Self {
        Fresh {
            sim,
            fresh,
            maps: AtomicUsize::new(0),
            p2m_reads: AtomicUsize::new(0),
        }
    }
}

impl Hypervisor for Fresh<'_> {
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
        self.maps.fetch_add(1, Ordering::Relaxed);
        self.sim.map_pages(d, g, w)
    }
    fn guest_width(&self, d: DomId) -> Result<u32> {
        self.sim.guest_width(d)
    }
    fn set_guest_width(&self, d: DomId, w: u32) -> Result<()> {
        self.sim.set_guest_width(d, w)
    }
    fn pv_p2m(&self, d: DomId) -> Result<PvP2m> {
        self.p2m_reads.fetch_add(1, Ordering::Relaxed);
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
    fn populate(&self, d: DomId, p: &[u64]) -> Result<Vec<u64>> {
        self.sim.populate(d, p)
    }
    fn host_free_memory(&self) -> Result<Option<u64>> {
        self.sim.host_free_memory()
    }
    fn shadow_paging(&self) -> Result<bool> {
        self.sim.shadow_paging()
    }
    fn domain_max_memory(&self, d: DomId) -> Result<u64> {
        self.sim.domain_max_memory(d)
    }
    fn cpu_cap(&self, d: DomId) -> Result<u32> {
        self.sim.cpu_cap(d)
    }
    fn set_cpu_cap(&self, d: DomId, cap: u32) -> Result<()> {
        self.sim.set_cpu_cap(d, cap)
    }
}

/// The reserved grant entries the simulated grant table holds.
fn grants(sim: &SimHost, d: DomId) -> (GrantEntry, GrantEntry) {
    let g = sim.toolstack_state(d).unwrap().grant_table;
    (g[GNTTAB_RESERVED_CONSOLE], g[GNTTAB_RESERVED_XENSTORE])
}

fn xs(sim: &SimHost, path: String) -> Option<String> {
    sim.xenstore_read(&path).unwrap()
}

fn saved_image(t: GuestType) -> Vec<u8> {
    let mut a = TestHost::new();
    let mut c = rxmigrate::hv::sim::GuestConfig::new("g", t, 16, WorkloadKind::Uniform);
    c.seed = 3;
    let dom = a.create(&c);
    a.save_image(dom)
}

/// The domain `out` names, read back from the guest's start_info.
fn pv_start_info(sim: &SimHost, d: DomId) -> Vec<u8> {
    let st = sim.pv_vcpu(d, 0).unwrap();
    let si_mfn = vcpu::Context64::new(&st.basic).unwrap().reg(vcpu::Reg::Rdx);
    sim.map_pages(d, &[si_mfn], false).unwrap().page(0).to_vec()
}

#[test]
fn pv_restore_builds_seeds_and_introduces_the_domain() {
    let img = saved_image(GuestType::Pv);
    let b = TestHost::new();
    let ts = Recorder::new(&b.host);
    let out = migrate::restore_image(
        ts.host(),
        &mut img.as_slice(),
        &RestoreImageOptions::default(),
        &mut NoHooks,
    )
    .expect("restore");
    let d = out.domid;
    let st = b.host.toolstack_state(d).unwrap();
    let ch = st.channels.expect("channels");
    assert_eq!(
        ts.calls(),
        vec![
            format!("build {d} ports {}/{}", ch.store_port, ch.console_port),
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
    let si = pv_start_info(&b.host, d);
    assert_eq!(start_info::store_evtchn(&si), ch.store_port);
    assert_eq!(start_info::console_evtchn(&si), ch.console_port);
    assert_eq!(start_info::store_mfn(&si), out.store_gfn);
    assert_eq!(start_info::console_mfn(&si), out.console_gfn);
    // Introduced to xenstore with the frames the stream named.
    assert_eq!(
        st.introduced,
        Some(Rings {
            store_gfn: out.store_gfn,
            console_gfn: out.console_gfn
        })
    );
    let dp = format!("/local/domain/{d}");
    assert_eq!(xs(&b.host, format!("{dp}/name")).as_deref(), Some("g"));
    assert_eq!(
        xs(&b.host, format!("{dp}/store/ring-ref")),
        Some(out.store_gfn.to_string())
    );
    assert_eq!(
        xs(&b.host, format!("{dp}/store/port")),
        Some(ch.store_port.to_string())
    );
    assert_eq!(
        xs(&b.host, format!("{dp}/console/ring-ref")),
        Some(out.console_gfn.to_string())
    );
    // The grant table grants the rings to dom0's daemons.
    let (console, store) = grants(&b.host, d);
    assert_eq!((console.flags, console.domid), (1, 0));
    assert_eq!(console.frame, out.console_gfn);
    assert_eq!((store.flags, store.domid), (1, 0));
    assert_eq!(store.frame, out.store_gfn);
    // A PV guest has no device model; its config is kept for its next save.
    assert_eq!(st.device_model, None);
    assert!(st.platform_started);
    let again = b.host.domain_config(d).unwrap();
    assert_eq!(again.name(), Some("g"));
    assert!(again.section("rxmigrate").is_some());
    b.host.destroy(d).unwrap();
}

#[test]
fn hvm_restore_sets_the_channels_as_params_and_carries_the_device_model() {
    let mut a = TestHost::new();
    let mut c =
        rxmigrate::hv::sim::GuestConfig::new("g", GuestType::Hvm, 16, WorkloadKind::Uniform);
    c.seed = 3;
    let sd = a.create(&c);
    let dm = a
        .host
        .device_model_state(sd)
        .unwrap()
        .expect("an HVM guest's device model");
    let img = a.save_image(sd);
    let b = TestHost::new();
    let ts = Recorder::new(&b.host);
    let out = migrate::restore_image(
        ts.host(),
        &mut img.as_slice(),
        &RestoreImageOptions::default(),
        &mut NoHooks,
    )
    .expect("restore");
    let d = out.domid;
    let st = b.host.toolstack_state(d).unwrap();
    let ch = st.channels.expect("channels");
    assert_eq!(b.host.hvm_param(d, 2).unwrap(), u64::from(ch.store_port));
    assert_eq!(b.host.hvm_param(d, 18).unwrap(), u64::from(ch.console_port));
    let calls = ts.calls();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert!(calls[2].starts_with(&format!("finished {d}")), "{calls:?}");
    // The store frame is the one the stream's HVM params named.
    assert_eq!(out.store_gfn, a.host.hvm_param(sd, 1).unwrap());
    assert_eq!(
        xs(&b.host, format!("/local/domain/{d}/store/ring-ref")),
        Some(out.store_gfn.to_string())
    );
    let (console, store) = grants(&b.host, d);
    assert_eq!(console.frame, out.console_gfn);
    assert_eq!(store.frame, out.store_gfn);
    // The device model's state went through the image unchanged.
    assert_eq!(b.host.device_model_state(d).unwrap(), Some(dm));
    b.host.destroy(d).unwrap();
}

#[test]
fn a_config_the_simulated_host_cannot_run_is_refused_before_anything_is_built() {
    let img = saved_image(GuestType::Pv);
    let mut input = img.as_slice();
    let config = rxmigrate::image::read_start(&mut input).unwrap().unwrap();
    let b = TestHost::new();
    let mut raw = config.raw().clone();
    raw["b_info"]["max_vcpus"] = 65.into();
    let e = b
        .host
        .check_restore_config(&DomainConfig::from_json(raw).unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("b_info.max_vcpus"), "{e}");
    let mut raw = config.raw().clone();
    raw["rxmigrate"]["workload"] = "no-such-workload".into();
    let e = b
        .host
        .check_restore_config(&DomainConfig::from_json(raw).unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("rxmigrate section"), "{e}");
    assert!(b.host.check_restore_config(&config).is_ok());
}

/// What a restore into a toolstack-built domain left behind.
struct ToolstackRestore {
    host: TestHost,
    domid: DomId,
    out: rxmigrate::restore::RestoreOutcome,
    /// The toolstack hooks' calls.
    calls: Vec<String>,
    /// The engine's map_pages calls.
    maps: usize,
    /// PAGE_DATA records of the image that carry page data (a record of
    /// XALLOC entries only has nothing to map).
    data_records: usize,
}

/// Restores a saved image of type `t` into a domain the toolstack built (as
/// libxl does before running the helper), reported as Xen reports it then.
fn restore_into_toolstack_domain(t: GuestType) -> ToolstackRestore {
    use rxmigrate::restore::{self, RestoreParams, Target};
    let img = saved_image(t);
    let b = TestHost::new();
    let mut input = img.as_slice();
    let config = rxmigrate::image::read_start(&mut input).unwrap().unwrap();
    let data_records = data_records(input);
    // Built by another toolstack (libxl): the simulated one's record of it
    // says so.
    let d = b
        .host
        .build_domain(&DomainSpec {
            name: "g".into(),
            guest_type: t,
            max_pfn: config.max_pfn().unwrap(),
            max_vcpu_id: 0,
            config: Some(config.clone()),
        })
        .unwrap()
        .domid;
    let ts = Recorder::new(&b.host);
    let fresh = Fresh::new(&b.host, Some(d));
    let params = RestoreParams {
        store_evtchn: 5,
        store_domid: 0,
        console_evtchn: 6,
        console_domid: 0,
    };
    let mut reader = rxmigrate::stream::LibxcReader::new(&mut input).unwrap();
    let out = restore::restore(
        Host {
            hv: &fresh,
            ts: &ts,
        },
        &mut reader,
        Target::Existing(d),
        params,
        &mut NoHooks,
    )
    .unwrap_or_else(|e| panic!("restore into the fresh {t} domain: {e}"));
    assert_eq!(out.domid, d);
    let calls = ts.calls();
    let maps = fresh.maps.load(Ordering::Relaxed);
    drop((ts, fresh));
    ToolstackRestore {
        host: b,
        domid: d,
        out,
        calls,
        maps,
        data_records,
    }
}

/// The PAGE_DATA records of a libxc stream that carry page data. How many
/// there are depends on what the guest wrote before the save (its workload
/// runs on its own clock).
fn data_records(stream: &[u8]) -> usize {
    use rxmigrate::stream::Record;
    let mut r = rxmigrate::stream::LibxcReader::new(stream).unwrap();
    let mut n = 0;
    while let Some(rec) = r.next_record().unwrap() {
        match rec {
            Record::PageData(pd) if pd.pages_with_data() > 0 => n += 1,
            Record::End => break,
            _ => {}
        }
    }
    n
}

#[test]
fn pv_restore_maps_each_record_once_and_the_p2m_once() {
    // 16 MiB: 4 096 pfns in PAGE_DATA records of up to 1 024. The first
    // record holds the page tables, which map every pfn: localising them
    // populates the whole guest, and its P2M frames (pfns 4-11) arrive in
    // the same record. So the P2M is written once, after it, and never
    // again; besides one mapping per record with data (one of zero pages
    // only is populated, not mapped), start_info's at END.
    let r = restore_into_toolstack_domain(GuestType::Pv);
    let (out, maps, with_data) = (&r.out, r.maps, r.data_records);
    let records = out.stats.page_records as usize;
    assert!(records >= 4, "{records} PAGE_DATA records");
    assert!(with_data >= 1, "the page tables' record carries data");
    assert_eq!(
        maps,
        with_data + 2,
        "map_pages calls for {with_data} records with data (one each), the P2M and start_info"
    );
    assert_eq!(out.stats.populated, 4096);
    assert_eq!(out.stats.pages, out.pages);
}

#[test]
fn existing_pv_domain_without_a_p2m_is_sized_by_the_stream() {
    // Xen reports a PV domain libxl just built without a P2M.
    let ToolstackRestore {
        host: b,
        domid: d,
        out,
        calls,
        ..
    } = restore_into_toolstack_domain(GuestType::Pv);
    // libxl's channels, not the toolstack's; the grant table is seeded,
    // the rings are libxl's to connect.
    assert_eq!(
        calls,
        vec![format!(
            "seed {d} console {:#x}@0 store {:#x}@0",
            out.console_gfn, out.store_gfn
        )]
    );
    let si = pv_start_info(&b.host, d);
    assert_eq!(start_info::store_evtchn(&si), 5);
    assert_eq!(start_info::console_evtchn(&si), 6);
    b.host.destroy(d).unwrap();
}

#[test]
fn existing_hvm_domain_grows_with_the_stream() {
    // Xen reports an HVM domain libxl built for a restore with nothing
    // mapped yet.
    let ToolstackRestore {
        host: b,
        domid: d,
        out,
        ..
    } = restore_into_toolstack_domain(GuestType::Hvm);
    assert_eq!(b.host.hvm_param(d, 2).unwrap(), 5);
    assert_eq!(b.host.hvm_param(d, 18).unwrap(), 6);
    assert!(out.pages > 0);
    b.host.destroy(d).unwrap();
}

/// A saved HVM image whose device model state is `dm`.
fn hvm_image_with_device_model(dm: &DeviceModelState) -> Vec<u8> {
    let mut a = TestHost::new();
    let mut c =
        rxmigrate::hv::sim::GuestConfig::new("g", GuestType::Hvm, 16, WorkloadKind::Uniform);
    c.seed = 3;
    let dom = a.create(&c);
    let ts = Recorder {
        saved_dm: Some(dm.clone()),
        ..Recorder::new(&a.host)
    };
    save_with(ts.host(), dom, "xen4", false)
}

/// A saved image of `dom`, made through `host` with `policy`.
fn save_with(host: Host<'_>, dom: DomId, policy: &str, live: bool) -> Vec<u8> {
    let mut img = Vec::new();
    let mut p = rxmigrate::precopy::by_name(policy).unwrap();
    migrate::save_image(
        host,
        dom,
        &mut img,
        p.as_mut(),
        rxmigrate::save::SaveOptions { live },
        &mut rxmigrate::save::DirectHooks,
        false,
    )
    .unwrap_or_else(|e| panic!("save with {policy} (live: {live}): {e}"));
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
    let ts = Recorder::new(&b.host);
    let opts = RestoreImageOptions {
        name: Some("copy".into()),
        ..Default::default()
    };
    let out = migrate::restore_image(ts.host(), &mut img.as_slice(), &opts, &mut NoHooks)
        .expect("restore");
    let (d, state, config) = ts.platform.lock().unwrap().clone().unwrap();
    assert_eq!(d, out.domid);
    assert_eq!(state, Some(device_model()));
    // The config names the domain as it is now called.
    assert_eq!(config.unwrap().name(), Some("copy"));
    assert_eq!(b.host.domain_config(d).unwrap().name(), Some("copy"));
    assert_eq!(
        b.host
            .xenstore_read(&format!("/local/domain/{d}/name"))
            .unwrap()
            .as_deref(),
        Some("copy")
    );
    // The device model comes after the rings are connected.
    let calls = ts.calls();
    assert_eq!(calls.last().unwrap(), &format!("platform {d}"), "{calls:?}");
    assert_eq!(b.host.device_model_state(d).unwrap(), Some(device_model()));
    b.host.destroy(out.domid).unwrap();
}

/// A restore of `img` that must fail on a host set up by `setup`: returns
/// the error, the host's recorded calls and what start_platform was handed,
/// after checking that no domain was left behind.
fn failed_restore(
    img: &[u8],
    setup: impl FnOnce(&mut Recorder),
) -> (String, Vec<String>, Option<PlatformCall>) {
    let b = TestHost::new();
    let before = b.host.list_domains().unwrap().len();
    let mut ts = Recorder::new(&b.host);
    setup(&mut ts);
    let e = migrate::restore_image(
        ts.host(),
        &mut &img[..],
        &RestoreImageOptions::default(),
        &mut NoHooks,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(b.host.list_domains().unwrap().len(), before, "{e}");
    let platform = ts.platform.lock().unwrap().clone();
    (e, ts.calls(), platform)
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
    let ts = Recorder {
        fail_platform: true,
        ..Recorder::new(&b.host)
    };
    let mut acks = Vec::new();
    let opts = migrate::ReceiveOptions::default();
    let e = migrate::receive(ts.host(), stream.as_slice(), &mut acks, &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("QEMU exited"), "{e}");
    // Only the banner went back: the sender keeps (and resumes) its guest.
    assert_eq!(acks, handshake::BANNER);
    assert_eq!(b.host.list_domains().unwrap().len(), before);
}

#[test]
fn a_live_pv_save_reads_the_p2m_once_before_the_rounds() {
    // Xen's saver maps the guest's P2M once and reads its live mapping for
    // the few frames the vCPUs name after the suspend; reading the whole
    // P2M again (and inverting it) in the pause made the pause grow with
    // the guest. The vCPU frames are checked against the P2M leaves as they
    // are now, which the image's restore then proves right.
    let mut a = TestHost::new();
    let mut c = rxmigrate::hv::sim::GuestConfig::new("g", GuestType::Pv, 16, WorkloadKind::Uniform);
    c.seed = 3;
    let dom = a.create(&c);
    let watched = Fresh::new(&a.host, None);
    let ts = Recorder::new(&a.host);
    let host = Host {
        hv: &watched,
        ts: &ts,
    };
    let img = save_with(host, dom, "hotpage", true);
    assert_eq!(watched.p2m_reads.load(Ordering::Relaxed), 1);
    let b = TestHost::new();
    let out = migrate::restore_image(
        Recorder::new(&b.host).host(),
        &mut img.as_slice(),
        &RestoreImageOptions::default(),
        &mut NoHooks,
    )
    .expect("restore");
    b.host.unpause(out.domid).unwrap();
}
