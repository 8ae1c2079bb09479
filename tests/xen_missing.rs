//! Without Xen the backend says exactly what is missing.

use std::path::Path;
use xen_sys::{LoadError, Missing, Probe, XenLibs, LIBRARIES, PRIVCMD};

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
    assert_eq!(m.len(), 1 + LIBRARIES.len(), "{m:?}");
    assert_eq!(m[0], Missing::Device(d.path().join("privcmd")));
    for (lib, got) in LIBRARIES.iter().zip(&m[1..]) {
        assert!(
            matches!(got, Missing::Library { soname, .. } if soname == lib),
            "{got:?}"
        );
    }
    let text = err.to_string();
    for want in [
        "privcmd is missing",
        "libxenctrl.so.4.17 cannot be loaded",
        "libxenguest.so.4.17",
        "libxenforeignmemory.so.1",
        "libxenevtchn.so.1",
        "libxenstore.so.4",
    ] {
        assert!(text.contains(want), "{want:?} not in {text}");
    }
}

#[test]
fn a_library_of_the_wrong_kind_is_named_with_its_missing_function() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("privcmd"), b"").unwrap();
    // A real shared library that is not libxenctrl: it loads, but lacks
    // Xen's functions (as a libxenctrl of another Xen version would).
    let libm = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/lib64/libm.so.6",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("libm.so.6");
    std::os::unix::fs::symlink(libm, d.path().join("libxenctrl.so.4.17")).unwrap();
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
    // The four others are still reported as absent libraries.
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
