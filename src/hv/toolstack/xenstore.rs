//! The xenstore entries of a domain built for a standalone restore: what
//! libxl writes for a guest without devices, so that xenstored serves it and
//! xenconsoled logs its console. Both backends write these (Xen into
//! xenstored, the simulated host into its per-domain store). Pure data.

use crate::hv::DomId;

pub const PERM_NONE: u32 = 0;
pub const PERM_READ: u32 = 1;

/// One xenstore node: path, value, permissions (owner first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub path: String,
    pub value: String,
    pub perms: Vec<(u32, u32)>,
}

/// Formats a domain handle as a UUID.
pub fn uuid_string(h: &[u8; 16]) -> String {
    let x: String = h.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// The nodes written at creation, before the guest's rings are known.
pub fn base_nodes(dom: DomId, name: &str, uuid: &str, max_vcpu_id: u32, mem_kb: u64) -> Vec<Node> {
    let dp = format!("/local/domain/{dom}");
    let vm = format!("/vm/{uuid}");
    // Owned by dom0, readable by the guest; the guest may write its own
    // control, data and feature nodes (as libxl sets them).
    let ro = vec![(0, PERM_NONE), (dom, PERM_READ)];
    let rw = vec![(dom, PERM_NONE)];
    let n = |p: String, v: &str, perms: &Vec<(u32, u32)>| Node {
        path: p,
        value: v.to_string(),
        perms: perms.clone(),
    };
    let mut v = vec![
        n(vm.clone(), "", &vec![(0, PERM_NONE)]),
        n(format!("{vm}/uuid"), uuid, &vec![(0, PERM_NONE)]),
        n(format!("{vm}/name"), name, &vec![(0, PERM_NONE)]),
        n(dp.clone(), "", &ro),
        n(format!("{dp}/name"), name, &ro),
        n(format!("{dp}/domid"), &dom.to_string(), &ro),
        n(format!("{dp}/vm"), &vm, &ro),
        n(format!("{dp}/control"), "", &ro),
        n(format!("{dp}/control/shutdown"), "", &rw),
        n(format!("{dp}/control/sysrq"), "", &rw),
        n(
            format!("{dp}/control/platform-feature-multiprocessor-suspend"),
            "1",
            &ro,
        ),
        n(
            format!("{dp}/control/platform-feature-xs_reset_watches"),
            "1",
            &ro,
        ),
        n(format!("{dp}/device"), "", &ro),
        n(format!("{dp}/device/suspend/event-channel"), "", &rw),
        n(format!("{dp}/data"), "", &rw),
        n(format!("{dp}/drivers"), "", &rw),
        n(format!("{dp}/feature"), "", &rw),
        n(format!("{dp}/attr"), "", &rw),
        n(format!("{dp}/error"), "", &rw),
        n(format!("{dp}/memory"), "", &ro),
        n(format!("{dp}/memory/static-max"), &mem_kb.to_string(), &ro),
        n(format!("{dp}/memory/target"), &mem_kb.to_string(), &ro),
    ];
    for c in 0..=max_vcpu_id {
        v.push(n(format!("{dp}/cpu/{c}/availability"), "online", &ro));
    }
    v
}

/// The nodes that connect the guest's console and xenstore rings, written
/// once the restore knows where they are.
pub fn ring_nodes(dom: DomId, store: (u64, u32), console: (u64, u32)) -> Vec<Node> {
    let dp = format!("/local/domain/{dom}");
    let ro = vec![(0, PERM_NONE), (dom, PERM_READ)];
    let n = |p: &str, v: String| Node {
        path: format!("{dp}/{p}"),
        value: v,
        perms: ro.clone(),
    };
    vec![
        n("store/ring-ref", store.0.to_string()),
        n("store/port", store.1.to_string()),
        n("console/ring-ref", console.0.to_string()),
        n("console/port", console.1.to_string()),
        n("console/limit", "1048576".into()),
        n("console/type", "xenconsoled".into()),
        n("console/output", "pty".into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_format() {
        let h: [u8; 16] = std::array::from_fn(|i| i as u8 * 17);
        assert_eq!(uuid_string(&h), "00112233-4455-6677-8899-aabbccddeeff");
    }

    #[test]
    fn guest_can_write_control_but_not_its_name() {
        let v = base_nodes(5, "g", "u", 1, 1000);
        let get = |p: &str| {
            v.iter()
                .find(|n| n.path == p)
                .unwrap_or_else(|| panic!("{p} missing"))
        };
        assert_eq!(get("/local/domain/5/name").value, "g");
        assert_eq!(
            get("/local/domain/5/name").perms,
            vec![(0, PERM_NONE), (5, PERM_READ)]
        );
        assert_eq!(
            get("/local/domain/5/control/shutdown").perms,
            vec![(5, PERM_NONE)]
        );
        assert_eq!(get("/local/domain/5/vm").value, "/vm/u");
        assert_eq!(get("/local/domain/5/cpu/1/availability").value, "online");
        assert_eq!(get("/local/domain/5/memory/target").value, "1000");
    }

    #[test]
    fn rings_name_frames_and_ports() {
        let v = ring_nodes(3, (0x1234, 1), (0x1235, 2));
        let get = |p: &str| {
            v.iter()
                .find(|n| n.path == format!("/local/domain/3/{p}"))
                .unwrap()
                .value
                .clone()
        };
        assert_eq!(get("store/ring-ref"), (0x1234).to_string());
        assert_eq!(get("store/port"), "1");
        assert_eq!(get("console/ring-ref"), (0x1235).to_string());
        assert_eq!(get("console/port"), "2");
    }
}
