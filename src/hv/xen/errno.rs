//! libxenctrl failures (-1 and errno) as [`HvError`]s that say what to do.

use crate::hv::{DomId, Errno, HvError};

/// The error of a failed call `op` on `dom`, from the errno it left.
pub fn xc_error(dom: DomId, op: &'static str, errno: i32) -> HvError {
    let with = |msg: String| HvError::Op {
        dom,
        op,
        msg,
        errno: Some(Errno::from_raw(errno)),
    };
    match errno {
        // Only a lookup's ESRCH means the domain is gone; elsewhere it is
        // a missing vCPU or port, and the operation must stay named.
        libc::ESRCH if op == "domain_info" => HvError::NoSuchDomain(dom.to_string()),
        libc::ESRCH => with("no such domain or vCPU (ESRCH)".into()),
        libc::EPERM | libc::EACCES => with(format!(
            "{} (rxmigrate must run as root in dom0)",
            std::io::Error::from_raw_os_error(errno)
        )),
        // Debian's 4.17.7 hypervisor is built without shadow paging, which
        // PV log-dirty needs (docs/LAB.md).
        libc::EOPNOTSUPP if op.starts_with("logdirty") => HvError::Unsupported {
            dom,
            op,
            what: "this hypervisor (log-dirty needs shadow paging for PV guests; \
                   Xen was built without it)"
                .into(),
        },
        0 => HvError::op(dom, op, "failed without an errno"),
        e => HvError::os(dom, op, Errno::from_raw(e)),
    }
}

/// The calling thread's errno.
pub fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_domain_is_no_such_domain_only_for_lookups() {
        assert!(
            matches!(xc_error(7, "domain_info", libc::ESRCH), HvError::NoSuchDomain(d) if d == "7")
        );
        let e = xc_error(7, "vcpu_getinfo", libc::ESRCH).to_string();
        assert!(
            e.contains("domain 7: vcpu_getinfo failed") && e.contains("ESRCH"),
            "{e}"
        );
    }

    #[test]
    fn permission_errors_say_to_run_as_root_in_dom0() {
        let e = xc_error(3, "domain_info", libc::EPERM).to_string();
        assert!(
            e.contains("domain 3") && e.contains("domain_info") && e.contains("root in dom0"),
            "{e}"
        );
    }

    #[test]
    fn logdirty_without_shadow_paging_is_unsupported() {
        let e = xc_error(4, "logdirty_enable", libc::EOPNOTSUPP);
        assert!(matches!(e, HvError::Unsupported { dom: 4, .. }));
        assert!(e.to_string().contains("shadow paging"));
        // The same errno elsewhere is an ordinary failure with its text.
        let e = xc_error(4, "pin_table", libc::EOPNOTSUPP).to_string();
        assert!(
            e.contains("pin_table") && e.contains("not supported"),
            "{e}"
        );
    }

    #[test]
    fn other_errnos_keep_their_text() {
        let e = xc_error(9, "populate", libc::ENOMEM).to_string();
        assert!(
            e.contains("domain 9: populate failed") && e.contains("memory"),
            "{e}"
        );
    }

    #[test]
    fn the_errno_is_kept_as_a_number() {
        for (op, errno) in [
            ("populate", libc::ENOMEM),
            ("vcpu_getinfo", libc::ESRCH),
            ("domain_info", libc::EACCES),
            ("pin_table", libc::EOPNOTSUPP),
        ] {
            let e = xc_error(9, op, errno);
            assert_eq!(e.errno(), Some(Errno::from_raw(errno)), "{op}: {e}");
        }
        assert_eq!(xc_error(9, "x", 0).errno(), None);
        assert_eq!(
            xc_error(9, "domain_info", libc::ESRCH).errno(),
            Some(Errno::ESRCH)
        );
    }
}
