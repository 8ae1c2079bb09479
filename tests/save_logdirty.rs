//! Log-dirty around a save. The order of the last steps, as Xen's saver
//! has them: the stream's END record is written (and flushed) before
//! log-dirty is switched off, Xen's first and then the device model's. The
//! receiver can finish while the sender's toolstack asks QEMU to stop
//! tracking; on a failed save log-dirty is off before the error is
//! returned. And a standalone save (`rxmigrate save --live`, `migrate`)
//! has the device model track its own writes to guest memory during the
//! rounds, as libxl has it for xl.

mod sim_util;

use rxmigrate::hv::sim::{GuestConfig, SimHost, WorkloadKind};
use rxmigrate::hv::{DomId, GuestType};
use rxmigrate::save::{self, SaveError, SaveHooks, SaveOptions};
use rxmigrate::stats::RoundStats;
use sim_util::TestHost;
use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;

/// The stream as written so far, shared with the hooks.
#[derive(Clone, Default)]
struct Shared(Rc<RefCell<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What was true when the device model was asked to stop tracking.
#[derive(Debug, PartialEq)]
struct AtQemuOff {
    stream_ends_with_end: bool,
    xen_logdirty_on: bool,
}

struct Hooks<'a> {
    host: &'a SimHost,
    stream: Shared,
    qemu_off: Vec<AtQemuOff>,
}

impl SaveHooks for Hooks<'_> {
    fn switch_qemu_logdirty(&mut self, dom: DomId, enable: bool) -> Result<(), SaveError> {
        if !enable {
            let s = self.stream.0.borrow();
            self.qemu_off.push(AtQemuOff {
                // END: type 0, length 0.
                stream_ends_with_end: s.ends_with(&[0u8; 8]),
                xen_logdirty_on: self.host.logdirty_enabled(dom).unwrap(),
            });
        }
        Ok(())
    }
}

fn hvm_guest(t: &mut TestHost) -> DomId {
    let mut c = GuestConfig::new("g", GuestType::Hvm, 16, WorkloadKind::Uniform);
    c.seed = 5;
    t.create(&c)
}

#[test]
fn end_goes_before_log_dirty_is_switched_off() {
    let mut t = TestHost::new();
    let dom = hvm_guest(&mut t);
    let stream = Shared::default();
    let mut hooks = Hooks {
        host: &t.host,
        stream: stream.clone(),
        qemu_off: Vec::new(),
    };
    let mut p = rxmigrate::precopy::by_name("xen4").unwrap();
    let out = save::save(
        &t.host,
        dom,
        stream.clone(),
        p.as_mut(),
        SaveOptions { live: true },
        &mut hooks,
    );
    let (outcome, _) = out.expect("save");
    assert_eq!(
        hooks.qemu_off,
        vec![AtQemuOff {
            stream_ends_with_end: true,
            xen_logdirty_on: false,
        }]
    );
    assert!(!t.host.logdirty_enabled(dom).unwrap());
    // The pause's marks name the order too.
    let parts: Vec<&str> = outcome.timeline.marks.iter().map(|m| m.what).collect();
    let end = parts.iter().position(|&w| w == "tx:end").expect("tx:end");
    let off = parts.iter().position(|&w| w == "tx:logdirty_off");
    assert_eq!(off, Some(end + 1), "{parts:?}");
}

/// A writer that breaks after the first `left` bytes.
struct Breaks {
    left: usize,
}

impl Write for Breaks {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        let n = b.len().min(self.left);
        self.left -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failed_save_switches_log_dirty_off_before_it_returns() {
    let mut t = TestHost::new();
    let dom = hvm_guest(&mut t);
    let mut hooks = Hooks {
        host: &t.host,
        stream: Shared::default(),
        qemu_off: Vec::new(),
    };
    let mut p = rxmigrate::precopy::by_name("xen4").unwrap();
    // The link breaks in round 0.
    let r = save::save(
        &t.host,
        dom,
        Breaks { left: 256 << 10 },
        p.as_mut(),
        SaveOptions { live: true },
        &mut hooks,
    );
    let e = r.err().expect("the save fails");
    assert!(
        e.to_string().contains("broken pipe") || e.to_string().contains("Broken pipe"),
        "{e}"
    );
    assert_eq!(hooks.qemu_off.len(), 1, "device model told once");
    assert!(!hooks.qemu_off[0].xen_logdirty_on);
    assert!(!t.host.logdirty_enabled(dom).unwrap());
}

/// Records whether the device model tracked its writes at each round's end.
struct DmWatch<'a> {
    host: &'a SimHost,
    dom: DomId,
    tracking: Vec<bool>,
}

impl SaveHooks for DmWatch<'_> {
    fn round_done(&mut self, _: &RoundStats) {
        let st = self.host.toolstack_state(self.dom).unwrap();
        self.tracking.push(st.dm_dirty_log);
    }
}

fn standalone_save<W: Write>(t: &TestHost, dom: DomId, out: W, live: bool) -> (bool, Vec<bool>) {
    let mut w = DmWatch {
        host: &t.host,
        dom,
        tracking: Vec::new(),
    };
    let mut p = rxmigrate::precopy::by_name("hotpage").unwrap();
    let r = rxmigrate::migrate::save_image(
        &t.host,
        dom,
        out,
        p.as_mut(),
        SaveOptions { live },
        &mut w,
        false,
    );
    (r.is_ok(), w.tracking)
}

#[test]
fn a_standalone_save_has_the_device_model_track_its_writes_during_the_rounds() {
    let mut t = TestHost::new();
    let dom = hvm_guest(&mut t);
    let (ok, tracking) = standalone_save(&t, dom, std::io::sink(), true);
    assert!(ok);
    assert!(tracking.len() >= 2, "{tracking:?}");
    assert!(tracking.iter().all(|&on| on), "{tracking:?}");
    assert!(!t.host.toolstack_state(dom).unwrap().dm_dirty_log);
    // A failed save leaves it off too.
    let dom = {
        let mut c = GuestConfig::new("h", GuestType::Hvm, 16, WorkloadKind::Uniform);
        c.seed = 6;
        t.create(&c)
    };
    let (ok, tracking) = standalone_save(&t, dom, Breaks { left: 256 << 10 }, true);
    assert!(!ok);
    assert!(tracking.iter().all(|&on| on), "{tracking:?}");
    assert!(!t.host.toolstack_state(dom).unwrap().dm_dirty_log);
}

#[test]
fn a_pv_guest_has_no_device_model_to_track() {
    let mut t = TestHost::new();
    let mut c = GuestConfig::new("p", GuestType::Pv, 16, WorkloadKind::Uniform);
    c.seed = 7;
    let dom = t.create(&c);
    let (ok, tracking) = standalone_save(&t, dom, std::io::sink(), true);
    assert!(ok);
    assert!(tracking.iter().all(|&on| !on), "{tracking:?}");
}
