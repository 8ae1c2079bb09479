//! What a receiver lets a stream make it build: the guest's size and vCPUs,
//! and the sizes of the records and data around the guest. Everything a
//! restore allocates is bounded by these (and by the guest's own size, once
//! known) before it is allocated.

use crate::hv::{DomainConfig, GuestType, Hypervisor};
use crate::image::ImageLimits;
use crate::stream::{OverLimit, ReadCaps, Size, Unit, PAGE_SIZE};

/// Largest guest restored without `--max-memory` when the host cannot say
/// how much memory it has free (its `xc_physinfo` failed). The restore's
/// own tables cost about 10 bytes per guest page: 160 MiB here, which any
/// dom0 has.
pub const FALLBACK_MAX_MEMORY: u64 = 64 << 30;
/// Xen's HVM_MAX_VCPUS (4.17): no guest has more.
pub const DEFAULT_MAX_VCPUS: u32 = 128;
/// Largest body of a libxc record other than PAGE_DATA and the P2M (which
/// follow the guest's size): an HVM context of 128 vCPUs is about 2 MiB,
/// CPUID and MSR policies a few KiB, vCPU blobs at most a few pages.
pub const DEFAULT_MAX_RECORD: u32 = 16 << 20;
/// Most entries one PAGE_DATA record may carry: Xen's saver writes at most
/// 1024 (MAX_BATCH_SIZE); this allows 1024 times that.
pub const DEFAULT_MAX_PAGE_ENTRIES: u32 = 1 << 20;

/// Page-number room an HVM guest has above its RAM size: the MMIO hole
/// below 4 GiB moves RAM above it, and the special pages (xenstore,
/// console, ioreq rings) sit just below 4 GiB even in a small guest.
const HVM_HOLE_PAGES: u64 = (4 << 30) / PAGE_SIZE as u64;

const MAX_MEMORY_HINT: &str = " (raise it with --max-memory)";

/// The receiver's limits on one restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most guest memory one restore may create, in bytes (`--max-memory`;
    /// by default the host's free memory).
    pub max_memory: u64,
    /// Most vCPUs the guest may have.
    pub max_vcpus: u32,
    /// Largest libxc record body but PAGE_DATA and X86_PV_P2M_FRAMES.
    pub max_record: u32,
    /// Most entries in one PAGE_DATA record.
    pub max_page_entries: u32,
    /// The xl config and the device model's records.
    pub image: ImageLimits,
}

impl Limits {
    /// The defaults with guest memory up to `max_memory` bytes.
    pub fn new(max_memory: u64) -> Limits {
        Limits {
            max_memory,
            max_vcpus: DEFAULT_MAX_VCPUS,
            max_record: DEFAULT_MAX_RECORD,
            max_page_entries: DEFAULT_MAX_PAGE_ENTRIES,
            image: ImageLimits::default(),
        }
    }

    /// The defaults on this host: guest memory up to what the host reports
    /// free, or [`FALLBACK_MAX_MEMORY`] where it cannot tell.
    pub fn for_host(hv: &dyn Hypervisor) -> Limits {
        let max_memory = match hv.host_free_memory() {
            Ok(Some(free)) => {
                log::info!(
                    "{} has {} free: restoring guests of up to that (--max-memory sets another \
                     limit)",
                    hv.describe(),
                    Size(free)
                );
                free
            }
            Ok(None) => {
                log::info!(
                    "{} does not report its free memory: restoring guests of up to {} \
                     (--max-memory sets another limit)",
                    hv.describe(),
                    Size(FALLBACK_MAX_MEMORY)
                );
                FALLBACK_MAX_MEMORY
            }
            Err(e) => {
                log::warn!(
                    "asking {} for its free memory: {e}; restoring guests of up to {}",
                    hv.describe(),
                    Size(FALLBACK_MAX_MEMORY)
                );
                FALLBACK_MAX_MEMORY
            }
        };
        Limits::new(max_memory)
    }

    /// Most guest pages (pfns 0..pages).
    pub fn max_pages(&self) -> u64 {
        self.max_memory / PAGE_SIZE as u64
    }

    /// A guest of `pages` pages, sized by `what`, fits.
    pub fn check_pages(&self, what: &str, pages: u64) -> Result<(), OverLimit> {
        if pages > self.max_pages() {
            return Err(OverLimit::new(
                what,
                pages.saturating_mul(PAGE_SIZE as u64),
                self.max_memory,
                Unit::Bytes,
            )
            .hint(MAX_MEMORY_HINT));
        }
        Ok(())
    }

    /// A guest with vCPU ids up to `max_vcpu_id` fits.
    pub fn check_vcpus(&self, what: &str, max_vcpu_id: u32) -> Result<(), OverLimit> {
        OverLimit::check(
            what,
            u64::from(max_vcpu_id) + 1,
            self.max_vcpus.into(),
            Unit::Items,
        )
    }

    /// What an xl config asks for fits: its memory and its vCPUs, checked
    /// before anything is created.
    pub fn check_config(&self, config: &DomainConfig) -> Result<(), OverLimit> {
        if let Some(kb) = config.max_memory_kb() {
            if kb / 4 > self.max_pages() {
                return Err(OverLimit::new(
                    "xl config b_info.max_memkb",
                    kb.saturating_mul(1024),
                    self.max_memory,
                    Unit::Bytes,
                )
                .hint(MAX_MEMORY_HINT));
            }
        }
        if let Some(n) = config.max_vcpus() {
            OverLimit::check(
                "xl config b_info.max_vcpus",
                n,
                self.max_vcpus.into(),
                Unit::Items,
            )?;
        }
        Ok(())
    }

    /// Highest pfn an HVM guest of `pages` pages may use: its RAM may sit
    /// above a hole below 4 GiB, and its special pages sit below 4 GiB.
    pub fn hvm_pfn_cap(pages: u64) -> u64 {
        pages.max(HVM_HOLE_PAGES).saturating_add(HVM_HOLE_PAGES) - 1
    }

    /// Highest pfn a guest of a domain the toolstack built, granted
    /// `granted_pages`, may use: its P2M may run past its memory
    /// (ballooned-out pfns) up to twice the grant for PV; an HVM guest gets
    /// the room of [`Limits::hvm_pfn_cap`]. Never beyond these limits.
    pub fn granted_pfn_cap(&self, guest_type: GuestType, granted_pages: u64) -> u64 {
        let pages = self.max_pages();
        match guest_type {
            GuestType::Pv => granted_pages.saturating_mul(2).min(pages),
            GuestType::Hvm => Limits::hvm_pfn_cap(granted_pages.min(pages)).saturating_add(1),
        }
        .saturating_sub(1)
    }

    /// The reader's caps for a guest whose pfns go up to `max_pfn`.
    pub fn read_caps(&self, max_pfn: u64) -> ReadCaps {
        ReadCaps {
            max_body: self.max_record,
            max_page_entries: self.max_page_entries,
            max_pfn,
        }
    }
}

/// A size as `--max-memory` takes it: a number with an optional binary
/// unit, K, M, G or T (also KiB, MiB, GiB, TiB); a bare number is MiB, as
/// xl's `memory =`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a size such as 512M, 4G or 1T"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "K" | "KIB" => 10,
        "" | "M" | "MIB" => 20,
        "G" | "GIB" => 30,
        "T" | "TIB" => 40,
        other => return Err(format!("{s:?}: unknown unit {other:?} (K, M, G or T)")),
    };
    let bytes = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if bytes < PAGE_SIZE as u64 {
        return Err(format!("{s:?} is less than a page"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_xl_memory() {
        assert_eq!(parse_size("512"), Ok(512 << 20));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1K").is_err());
        assert!(parse_size("4X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999999999T").is_err());
        assert!(parse_size("9999999999T").is_err());
    }

    #[test]
    fn config_memory_near_two_to_the_64_is_refused_not_wrapped() {
        let l = Limits::new(1 << 30);
        let facts = |kb: u64, vcpus: u64| {
            DomainConfig::from_json(serde_json::json!({
                "b_info": {"max_memkb": kb, "max_vcpus": vcpus}
            }))
            .unwrap()
        };
        assert!(l.check_config(&facts(1 << 20, 4)).is_ok());
        let e = l.check_config(&facts(u64::MAX - 3, 1)).unwrap_err();
        assert_eq!(e.what, "xl config b_info.max_memkb");
        assert_eq!(e.got, u64::MAX);
        assert!(e.to_string().contains("--max-memory"), "{e}");
        let e = l.check_config(&facts(1024, 4096)).unwrap_err();
        assert_eq!((e.got, e.limit), (4096, 128));
        assert!(l.check_pages("P2M", 1 << 18).is_ok());
        assert!(l.check_pages("P2M", (1 << 18) + 1).is_err());
        assert!(l.check_vcpus("vCPU", 127).is_ok());
        assert!(l.check_vcpus("vCPU", u32::MAX).is_err());
    }

    #[test]
    fn hvm_guests_may_use_the_hole_below_4g() {
        assert_eq!(Limits::hvm_pfn_cap(4096), (2 << 20) - 1);
        assert_eq!(Limits::hvm_pfn_cap(3 << 20), (4 << 20) - 1);
        assert_eq!(Limits::hvm_pfn_cap(u64::MAX), u64::MAX - 1);
    }

    #[test]
    fn a_granted_domain_bounds_the_stream_by_its_grant() {
        let l = Limits::new(1 << 30);
        // 128 MiB granted: a PV P2M up to 256 MiB of pfns.
        assert_eq!(l.granted_pfn_cap(GuestType::Pv, 1 << 15), (1 << 16) - 1);
        // Never beyond the receiver's own limit.
        assert_eq!(l.granted_pfn_cap(GuestType::Pv, 1 << 20), (1 << 18) - 1);
        // HVM: RAM plus the room below and above 4 GiB.
        assert_eq!(l.granted_pfn_cap(GuestType::Hvm, 1 << 15), (2 << 20) - 1);
        assert_eq!(l.granted_pfn_cap(GuestType::Hvm, 0), (2 << 20) - 1);
    }
}
