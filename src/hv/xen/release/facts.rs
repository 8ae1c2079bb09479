//! What differs between the Xen releases rxmigrate supports, as read from
//! Xen's tree at each RELEASE-x.y.0 tag (docs/REFERENCE.md §11.9). The unit
//! tests hold every number here against that release's bindgen output.

use xen_sys::XenRelease;

/// How `xen_domctl_createdomain` carries altp2m settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Altp2m {
    /// No field (4.17, 4.18): altp2m is an HVM param.
    None,
    /// `uint32_t altp2m_opts` after `grant_opts` (4.19, 4.20).
    Opts32 { offset: usize },
    /// `struct { uint16_t opts, nr; } altp2m` in the same place (4.21 on).
    OptsNr16 { offset: usize },
}

/// How one domain's info is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetInfo {
    /// `xc_domain_getinfolist(dom, 1)`, then check the domid that came back
    /// (4.17; `xc_domain_getinfo` and `xc_dominfo_t` exist there too, and
    /// are gone from 4.18 on).
    List,
    /// `xc_domain_getinfo_single(dom)`, ESRCH for a missing domain (4.18 on).
    Single,
}

/// One release's facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub release: XenRelease,
    /// `XEN_DOMCTL_INTERFACE_VERSION` (libxenctrl stamps it on every domctl).
    pub domctl_interface: u32,
    /// `XEN_SYSCTL_INTERFACE_VERSION`.
    pub sysctl_interface: u32,
    /// `sizeof(xen_domctl_createdomain)`.
    pub createdomain_size: usize,
    /// Offset of `createdomain.arch` (moves when altp2m is added).
    pub createdomain_arch: usize,
    pub altp2m: Altp2m,
    pub getinfo: GetInfo,
    /// `xc_cpuid_apply_policy` takes a `const struct xc_msr *` after its
    /// `xend` argument (4.18 on). rxmigrate does not call it (it sets the
    /// policy with xc_set_domain_cpu_policy); kept as a checked fact.
    pub cpuid_apply_policy_msr_arg: bool,
    /// Offset of the console ring's `connection` byte, which the restore
    /// sets to XENCONSOLE_DISCONNECTED for xenconsoled to flip (4.21 on);
    /// None where the ring has no such byte.
    pub console_connection: Option<usize>,
    /// Bytes of the HVM LAPIC save record (`struct hvm_hw_lapic`) in the
    /// headers bound: it grew by `pending_esr` (24 -> 32) in 4.21, and the
    /// fix was backported to 4.18.6, 4.19.6 and 4.20.2 (so Debian 13's
    /// 4.20.4 writes 32, 4.18.0/4.19.0 write 24). The record passes through
    /// rxmigrate opaquely, so both sizes are accepted; Xen loads a shorter
    /// one zero-extended.
    pub hvm_lapic_record: usize,
}

const fn r(minor: u32) -> XenRelease {
    XenRelease::new(4, minor)
}

/// Every supported release, oldest first (the order of xen_sys::SUPPORTED).
pub const FACTS: [Facts; 6] = [
    Facts {
        release: r(17),
        domctl_interface: 0x15,
        sysctl_interface: 0x15,
        createdomain_size: 64,
        createdomain_arch: 56,
        altp2m: Altp2m::None,
        getinfo: GetInfo::List,
        cpuid_apply_policy_msr_arg: false,
        console_connection: None,
        hvm_lapic_record: 24,
    },
    Facts {
        release: r(18),
        domctl_interface: 0x16,
        sysctl_interface: 0x15,
        createdomain_size: 64,
        createdomain_arch: 56,
        altp2m: Altp2m::None,
        getinfo: GetInfo::Single,
        cpuid_apply_policy_msr_arg: true,
        console_connection: None,
        hvm_lapic_record: 24,
    },
    Facts {
        release: r(19),
        domctl_interface: 0x17,
        sysctl_interface: 0x15,
        createdomain_size: 68,
        createdomain_arch: 60,
        altp2m: Altp2m::Opts32 { offset: 48 },
        getinfo: GetInfo::Single,
        cpuid_apply_policy_msr_arg: true,
        console_connection: None,
        hvm_lapic_record: 24,
    },
    Facts {
        release: r(20),
        domctl_interface: 0x17,
        sysctl_interface: 0x15,
        createdomain_size: 68,
        createdomain_arch: 60,
        altp2m: Altp2m::Opts32 { offset: 48 },
        getinfo: GetInfo::Single,
        cpuid_apply_policy_msr_arg: true,
        console_connection: None,
        hvm_lapic_record: 32,
    },
    Facts {
        release: r(21),
        domctl_interface: 0x17,
        sysctl_interface: 0x16,
        createdomain_size: 68,
        createdomain_arch: 60,
        altp2m: Altp2m::OptsNr16 { offset: 48 },
        getinfo: GetInfo::Single,
        cpuid_apply_policy_msr_arg: true,
        console_connection: Some(3088),
        hvm_lapic_record: 32,
    },
    Facts {
        release: r(22),
        domctl_interface: 0x18,
        sysctl_interface: 0x16,
        createdomain_size: 68,
        createdomain_arch: 60,
        altp2m: Altp2m::OptsNr16 { offset: 48 },
        getinfo: GetInfo::Single,
        cpuid_apply_policy_msr_arg: true,
        console_connection: Some(3088),
        hvm_lapic_record: 32,
    },
];

/// The facts of release `r`, if supported.
pub fn of(r: XenRelease) -> Option<&'static Facts> {
    FACTS.iter().find(|f| f.release == r)
}
