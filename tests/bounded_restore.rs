//! Issue 12, findings 3, 4 and the unpause half of 5: each stream an
//! attacker would send, through `rxmigrate restore FILE` and through
//! `rxmigrate receive` (stdin/stdout, as over ssh), against a fresh
//! simulated host. Each must end in a clear error within a hang guard,
//! within guest size + 256 MiB of RSS, and leave no domain and no shared
//! memory behind; where the finding was about *when* a refusal comes, the
//! error must name the record or field and the limit.

mod hostile;
mod sim_util;

use hostile::*;
use rxmigrate::hv::GuestType;
use std::sync::OnceLock;
use std::time::Duration;

const GUEST_MIB: u64 = 16;
const GUEST: u64 = GUEST_MIB << 20;
const HANG_GUARD: Duration = Duration::from_secs(10);
const BOTH: [Via; 2] = [Via::Restore, Via::Receive];

fn pv() -> Image {
    static IMG: OnceLock<Vec<u8>> = OnceLock::new();
    Image::parse(IMG.get_or_init(|| saved_image(GuestType::Pv, GUEST_MIB, 11)))
}

fn hvm() -> Image {
    static IMG: OnceLock<Vec<u8>> = OnceLock::new();
    Image::parse(IMG.get_or_init(|| saved_image(GuestType::Hvm, GUEST_MIB, 12)))
}

/// `rxmigrate receive -p` / `rxmigrate restore` of `bytes`, which must fail
/// as [`must_fail`] says, within the RSS bound; returns both errors.
fn refused_both_ways(bytes: &[u8], extra: &[&str]) -> Vec<String> {
    BOTH.iter()
        .map(|&via| {
            let mut args = extra.to_vec();
            if via == Via::Receive {
                args.push("-p");
            }
            let (run, _) = must_fail(bytes, via, &args, HANG_GUARD);
            assert_rss(&run, GUEST);
            run.stderr
        })
        .collect()
}

/// Finding 3: one PAGE_DATA record of 400 000 XALLOC entries (no page
/// data). The duplicate check was quadratic (24 s in a release build);
/// populate is linear now. The stream ends after that record.
#[test]
fn a_page_data_record_of_400k_xalloc_entries_costs_linear_time() {
    let mut img = hvm();
    let mut cfg = img.config_json();
    // A guest big enough for every entry to be one of its pfns.
    cfg["b_info"]["max_memkb"] = (2u64 << 20).into();
    img.set_config_json(&cfg);
    let first = img.find(rt::PAGE_DATA).expect("page data");
    img.records.truncate(first);
    let n = 400_000u64;
    img.records.push(Rec::new(
        rt::PAGE_DATA,
        page_data_nodata((0..n).map(|i| (0x1000 + i, XALLOC))),
    ));
    // The guard is the point: the outcome is the error of a cut stream.
    refused_both_ways(&img.bytes(), &[]);
}

/// Finding 3: 4 000 PAGE_DATA records of 24 bytes, each raising the top
/// pfn towards 1 TiB (XTAB entries populate nothing). Each raise rebuilt a
/// bitmap of up to 32 MiB (4 000 records outlived a 30 s limit). The guest
/// may grow only to its size plus the room below 4 GiB, and the bitmap
/// grows by doubling: the first record beyond that is refused.
#[test]
fn records_raising_the_top_pfn_are_refused_beyond_the_guests_size() {
    let mut img = hvm();
    let raise = (1..=4000u64).map(|i| Rec::new(rt::PAGE_DATA, page_data_nodata([(i << 16, 0xF)])));
    img.insert_before_end(raise);
    for e in refused_both_ways(&img.bytes(), &[]) {
        assert!(e.contains("PAGE_DATA"), "{e}");
        assert!(
            e.contains("is 0x200000, beyond the highest pfn the receiver allows this guest"),
            "{e}"
        );
    }
}

/// Finding 4: EMULATOR_XENSTORE_DATA after END, 4 records of 8 MiB: about
/// 31 bytes of RSS per byte (4 x 8 MiB in, 1 GiB RSS) and the restore
/// succeeded. Refused from the first record's header now.
#[test]
fn emulator_xenstore_data_floods_are_refused_from_the_record_header() {
    let mut img = hvm();
    let pairs: Vec<u8> = b"k\0v\0".repeat(2 << 20);
    let ctx = img
        .tail
        .iter()
        .find(|r| r.rtype == lt::EMULATOR_CONTEXT)
        .cloned();
    img.tail.clear();
    for _ in 0..4 {
        img.tail
            .push(Rec::new(lt::EMULATOR_XENSTORE_DATA, emulator_body(&pairs)));
    }
    img.tail.extend(ctx);
    img.tail.push(Rec::new(lt::END, Vec::new()));
    for e in refused_both_ways(&img.bytes(), &[]) {
        assert!(e.contains("EMULATOR_XENSTORE_DATA"), "{e}");
        assert!(e.contains("limit of 1 MiB"), "{e}");
    }
}

/// Finding 4: a 32 MiB JSON config (585 MiB of RSS, and restored): refused
/// by the config limit (1 MiB) before it is read.
#[test]
fn a_32_mib_config_is_refused_before_it_is_read() {
    let mut img = pv();
    let mut cfg = img.config_json();
    cfg["pad"] = "x".repeat(32 << 20).into();
    img.set_config_json(&cfg);
    for e in refused_both_ways(&img.bytes(), &[]) {
        assert!(e.contains("domain config"), "{e}");
        assert!(e.contains("limit of 1 MiB"), "{e}");
    }
}

/// Finding 4: X86_PV_VCPU_XSAVE records for vCPU ids 100 and up were kept
/// until END; the first is refused on arrival, naming the record.
#[test]
fn vcpu_records_beyond_the_guests_vcpus_are_refused_on_arrival() {
    let mut img = pv();
    let blob = vec![0u8; 64 << 10];
    img.insert_before_end(
        (100..300).map(|id| Rec::new(rt::X86_PV_VCPU_XSAVE, vcpu_body(id, &blob))),
    );
    for e in refused_both_ways(&img.bytes(), &[]) {
        assert!(e.contains("X86_PV_VCPU_XSAVE"), "{e}");
        assert!(e.contains("vCPU id is 100"), "{e}");
    }
}

/// A PV image whose config has no `max_memkb` (the stream sizes the
/// guest) and whose P2M ends at `end_pfn`, cut after the P2M record.
fn pv_sized_by_the_stream(end_pfn: u32) -> Vec<u8> {
    let mut img = pv();
    let mut cfg = img.config_json();
    cfg["b_info"]
        .as_object_mut()
        .expect("b_info")
        .remove("max_memkb");
    img.set_config_json(&cfg);
    let p2m = img.find(rt::X86_PV_P2M_FRAMES).expect("P2M record");
    let frames = u64::from(end_pfn) / 512 + 1;
    let mut body = Vec::with_capacity(8 + 8 * frames as usize);
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&end_pfn.to_le_bytes());
    for f in 0..frames {
        body.extend_from_slice(&(4 + f % 8).to_le_bytes());
    }
    img.records[p2m].body = body;
    img.records.truncate(p2m + 1);
    img.bytes()
}

/// Finding 4: without `max_memkb` the P2M's end_pfn sizes the domain;
/// 0xFFFFFFFF (16 TiB) is refused before any domain is created. Its 64 MiB
/// record is refused from its header: a P2M that big is beyond any limit.
#[test]
fn a_p2m_end_pfn_of_16_tib_creates_nothing() {
    let bytes = pv_sized_by_the_stream(0xFFFF_FFFF);
    for via in BOTH {
        let args: &[&str] = if via == Via::Receive { &["-p"] } else { &[] };
        let (run, sim) = must_fail(&bytes, via, args, HANG_GUARD);
        assert_rss(&run, GUEST);
        let e = &run.stderr;
        assert!(
            e.contains("(X86_PV_P2M_FRAMES)")
                && e.contains("record length is 64.0 MiB, beyond the receiver's limit"),
            "{e}"
        );
        assert_eq!(sim.domains_created(), 0, "{e}");
    }
}

/// As above for a P2M of 1 TiB (a 16 MiB record), which the record cap
/// lets through: the guest size its end_pfn implies is refused, naming it.
#[test]
fn a_p2m_end_pfn_beyond_the_free_memory_creates_nothing() {
    let bytes = pv_sized_by_the_stream((1 << 28) - 1);
    for via in BOTH {
        let args: &[&str] = if via == Via::Receive { &["-p"] } else { &[] };
        let (run, sim) = must_fail(&bytes, via, args, HANG_GUARD);
        assert_rss(&run, GUEST);
        let e = &run.stderr;
        assert!(e.contains("X86_PV_P2M_FRAMES end_pfn is 1 TiB"), "{e}");
        assert!(e.contains("--max-memory"), "{e}");
        assert_eq!(sim.domains_created(), 0, "{e}");
    }
}

/// Finding 4, with `--max-memory`: a 48 GiB P2M (which the simulated host
/// would create) on a receiver that allows 1 GiB creates nothing.
#[test]
fn max_memory_caps_the_guest_the_stream_asks_for() {
    let bytes = pv_sized_by_the_stream((12 << 20) - 1);
    for via in BOTH {
        let mut args = vec!["--max-memory", "1G"];
        if via == Via::Receive {
            args.push("-p");
        }
        let (run, sim) = must_fail(&bytes, via, &args, HANG_GUARD);
        assert_rss(&run, GUEST);
        let e = &run.stderr;
        assert!(
            e.contains("X86_PV_P2M_FRAMES end_pfn is 48 GiB, beyond the receiver's limit of 1 GiB"),
            "{e}"
        );
        assert_eq!(sim.domains_created(), 0, "{e}");
    }
}

/// Finding 4: `max_memkb` near 2^64 wrapped the size arithmetic; it is
/// refused as too big, naming the field, before anything is created.
#[test]
fn max_memkb_near_2_pow_64_is_refused_not_wrapped() {
    for mut img in [pv(), hvm()] {
        let mut cfg = img.config_json();
        cfg["b_info"]["max_memkb"] = (u64::MAX - 3).into();
        img.set_config_json(&cfg);
        for via in BOTH {
            let args: &[&str] = if via == Via::Receive { &["-p"] } else { &[] };
            let (run, sim) = must_fail(&img.bytes(), via, args, HANG_GUARD);
            let e = &run.stderr;
            assert!(e.contains("b_info.max_memkb is 16.0 EiB"), "{e}");
            assert_eq!(sim.domains_created(), 0, "{e}");
        }
    }
}

/// Finding 5 (unpause): an HVM guest whose IOREQ_PFN points at its
/// workload descriptor (pfn 0) has that page zeroed as a ring, and cannot
/// boot: the simulated host's unpause fails. `restore` exited 1 and kept
/// the domain; it destroys it now. (`receive` already destroyed it.)
#[test]
fn a_restored_guest_that_cannot_start_is_destroyed() {
    let mut img = hvm();
    let i = img.find(rt::HVM_PARAMS).expect("HVM params");
    let params: Vec<(u64, u64)> = img
        .hvm_params()
        .into_iter()
        .map(|(k, v)| if k == 5 { (k, 0) } else { (k, v) })
        .collect();
    assert!(params.iter().any(|&(k, _)| k == 5), "{params:?}");
    img.records[i].body = hvm_params_body(&params);
    for via in BOTH {
        let (run, _) = must_fail(&img.bytes(), via, &[], HANG_GUARD);
        assert!(
            run.stderr.contains("unpause") || run.stderr.contains("start"),
            "{}",
            run.stderr
        );
    }
}

/// Records Xen writes once per stream each cost a call to the host (a
/// metadata write for X86_TSC_INFO on the simulated host): 100 000 of them
/// are refused after 64.
#[test]
fn records_xen_writes_once_are_refused_when_repeated() {
    let mut img = pv();
    let r = img.find(0x08).expect("X86_TSC_INFO");
    let rec = img.records[r].clone();
    img.records
        .splice(r..r, std::iter::repeat_n(rec, 100_000))
        .for_each(drop);
    for e in refused_both_ways(&img.bytes(), &[]) {
        assert!(
            e.contains(
                "the count of X86_TSC_INFO records is 65, beyond the receiver's limit of 64"
            ),
            "{e}"
        );
    }
}
