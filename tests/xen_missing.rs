//! Without Xen the backend says exactly what is missing.

use std::path::Path;
use xen_sys::{LoadError, Missing, Probe, XenLibs, PRIVCMD, STABLE_LIBRARIES};

fn probe(dir: &Path) -> Probe {
    Probe {
        privcmd: dir.join("privcmd"),
        lib_dir: Some(dir.to_path_buf()),
    }
}

#[test]
fn every_missing_piece_is_named() {
    let d = tempfile::tempdir().unwrap();
    let err = XenLibs::open_with(&probe(d.path())).unwrap_err();
    let LoadError::Missing(m) = &err;
    assert_eq!(m.len(), 2 + STABLE_LIBRARIES.len(), "{m:?}");
    assert_eq!(m[0], Missing::Device(d.path().join("privcmd")));
    assert_eq!(m[1], Missing::NoXenctrl);
    for (lib, got) in STABLE_LIBRARIES.iter().zip(&m[2..]) {
        assert!(
            matches!(got, Missing::Library { soname, .. } if soname == lib),
            "{got:?}"
        );
    }
    let text = err.to_string();
    for want in [
        "privcmd is missing",
        "libxenctrl not found: is Xen installed?",
        "libxenforeignmemory.so.1",
        "libxenevtchn.so.1",
        "libxenstore.so.4",
    ] {
        assert!(text.contains(want), "{want:?} not in {text}");
    }
}

/// A real shared library that is not libxenctrl: it loads, but lacks Xen's
/// functions (as a libxenctrl of another Xen version would).
fn libm() -> &'static str {
    [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/lib64/libm.so.6",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("libm.so.6")
}

#[test]
fn an_unsupported_release_is_named_with_the_supported_range() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("privcmd"), b"").unwrap();
    std::os::unix::fs::symlink(libm(), d.path().join("libxenctrl.so.4.23")).unwrap();
    let err = XenLibs::open_with(&probe(d.path())).unwrap_err();
    assert!(
        err.missing()
            .contains(&Missing::Unsupported(xen_sys::XenRelease::new(4, 23))),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("Xen 4.23 found; rxmigrate supports 4.17–4.22"),
        "{err}"
    );
}

#[test]
fn the_installed_release_is_the_libxenctrl_soname_present() {
    // Each supported soname is looked for; the one present is the release
    // whose libraries are then opened (and, being libm, found lacking).
    for r in xen_sys::SUPPORTED {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("privcmd"), b"").unwrap();
        std::os::unix::fs::symlink(libm(), d.path().join(r.xenctrl())).unwrap();
        let err = XenLibs::open_with(&probe(d.path())).unwrap_err();
        let m = err.missing();
        assert!(
            m.iter()
                .any(|x| matches!(x, Missing::Symbol { soname, .. } if *soname == r.xenctrl())),
            "{r}: {m:?}"
        );
        assert!(
            m.iter()
                .any(|x| matches!(x, Missing::Library { soname, .. } if *soname == r.xenguest())),
            "{r}: {m:?}"
        );
    }
}

#[test]
fn a_library_of_the_wrong_kind_is_named_with_its_missing_function() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("privcmd"), b"").unwrap();
    std::os::unix::fs::symlink(libm(), d.path().join("libxenctrl.so.4.17")).unwrap();
    let err = XenLibs::open_with(&probe(d.path())).unwrap_err();
    let m = err.missing();
    assert!(!m.iter().any(|x| matches!(x, Missing::Device(_))), "{m:?}");
    let sym = m
        .iter()
        .find_map(|x| match x {
            Missing::Symbol { soname, why } => Some((soname.clone(), why.clone())),
            _ => None,
        })
        .expect("a missing symbol");
    assert_eq!(sym.0, "libxenctrl.so.4.17");
    assert!(sym.1.contains("xc_"), "{}", sym.1);
    assert!(err.to_string().contains("lacks a function"), "{err}");
    // libxenguest of the same release and the three others are absent.
    assert_eq!(
        m.iter()
            .filter(|x| matches!(x, Missing::Library { .. }))
            .count(),
        4
    );
}

#[test]
fn hv_xen_without_xen_names_the_device() {
    match rxmigrate::hv::open_hv(Some("xen")) {
        Ok(h) => {
            // Only in a dom0 (as root) can this succeed.
            assert!(Path::new(PRIVCMD).exists());
            assert_eq!(h.describe(), "xen");
        }
        Err(e) => {
            let t = e.to_string();
            if !Path::new(PRIVCMD).exists() {
                assert!(t.contains("/dev/xen/privcmd is missing"), "{t}");
                assert!(t.contains("hypervisor not available"), "{t}");
            }
        }
    }
}
