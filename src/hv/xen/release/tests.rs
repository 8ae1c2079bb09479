//! Each release's facts against that release's bindgen output.

use super::facts::{self, Altp2m, GetInfo, FACTS};
use std::mem::{offset_of, size_of};
use xen_sys::{XenRelease, SUPPORTED};

macro_rules! check_release {
    ($name:ident, $m:ident, $minor:literal, $altp2m:ident) => {
        #[test]
        fn $name() {
            use xen_sys::$m as v;
            let f = facts::of(XenRelease::new(4, $minor)).unwrap();
            assert_eq!(f.domctl_interface, v::XEN_DOMCTL_INTERFACE_VERSION);
            assert_eq!(f.sysctl_interface, v::XEN_SYSCTL_INTERFACE_VERSION);
            assert_eq!(f.createdomain_size, size_of::<v::xen_domctl_createdomain>());
            assert_eq!(
                f.createdomain_arch,
                offset_of!(v::xen_domctl_createdomain, arch)
            );
            assert_eq!(f.hvm_lapic_record, size_of::<v::hvm_hw_lapic>());
            check_release!(@altp2m f, v, $altp2m);
        }
    };
    (@altp2m $f:ident, $v:ident, none) => {
        assert_eq!($f.altp2m, Altp2m::None);
        assert_eq!($f.console_connection, None);
    };
    (@altp2m $f:ident, $v:ident, opts32) => {
        let off = offset_of!($v::xen_domctl_createdomain, altp2m_opts);
        assert_eq!($f.altp2m, Altp2m::Opts32 { offset: off });
        assert_eq!($f.console_connection, None);
    };
    (@altp2m $f:ident, $v:ident, nr16) => {
        let off = offset_of!($v::xen_domctl_createdomain, altp2m);
        assert_eq!($f.altp2m, Altp2m::OptsNr16 { offset: off });
        assert_eq!(
            $f.console_connection,
            Some(offset_of!($v::xencons_interface, connection))
        );
        assert_eq!($v::XENCONSOLE_DISCONNECTED, 1);
    };
}

check_release!(release_4_17_matches_its_bindings, v4_17, 17, none);
check_release!(release_4_18_matches_its_bindings, v4_18, 18, none);
check_release!(release_4_19_matches_its_bindings, v4_19, 19, opts32);
check_release!(release_4_20_matches_its_bindings, v4_20, 20, opts32);
check_release!(release_4_21_matches_its_bindings, v4_21, 21, nr16);
check_release!(release_4_22_matches_its_bindings, v4_22, 22, nr16);

#[test]
fn every_supported_release_has_facts_in_order() {
    let got: Vec<_> = FACTS.iter().map(|f| f.release).collect();
    assert_eq!(got, SUPPORTED.to_vec());
    // xc_domain_getinfo_single exists from 4.18 on.
    assert_eq!(FACTS[0].getinfo, GetInfo::List);
    assert!(FACTS[1..].iter().all(|f| f.getinfo == GetInfo::Single));
    assert!(facts::of(XenRelease::new(4, 23)).is_none());
}

#[test]
fn a_mismatched_or_unsupported_hypervisor_is_named() {
    let libs = XenRelease::new(4, 20);
    assert!(super::confirm(libs, (4, 20)).is_ok());
    let e = super::confirm(libs, (4, 17)).unwrap_err().to_string();
    assert!(
        e.contains("hypervisor is Xen 4.17") && e.contains("libxenctrl.so.4.20"),
        "{e}"
    );
    let e = super::confirm(libs, (4, 23)).unwrap_err().to_string();
    assert!(
        e.contains("Xen 4.23 found; rxmigrate supports 4.17–4.22"),
        "{e}"
    );
}
