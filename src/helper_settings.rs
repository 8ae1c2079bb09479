//! The settings of `rxmigrate-save-helper` (the xl plugin) as documentation:
//! its `/etc/rxmigrate.conf` keys, their environment variables, defaults and
//! meaning. `rxmigrate-docgen` writes the helper's man page from this table;
//! the plugin's own key list (`xl-plugin/src/config.rs`) is checked against
//! it by a test there, so the page cannot miss or invent a key.

/// The positional arguments libxl gives its save helper after
/// `--save-domain`, in order (libxl_save_callout.c's argv).
pub const SAVE_ARGS: [&str; 6] = [
    "io_fd",
    "recv_fd",
    "domid",
    "xcflags",
    "cbflags",
    "stream_type",
];

/// The same after `--restore-domain`.
pub const RESTORE_ARGS: [&str; 9] = [
    "io_fd",
    "send_back_fd",
    "domid",
    "store_evtchn",
    "store_domid",
    "console_evtchn",
    "console_domid",
    "cbflags",
    "stream_type",
];

/// One key of `/etc/rxmigrate.conf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelperSetting {
    /// The key in the file.
    pub key: &'static str,
    /// The environment variable that overrides it for one xl command.
    pub env: &'static str,
    /// The value when neither sets it.
    pub default: &'static str,
    /// What it does (one sentence or two, plain text).
    pub meaning: &'static str,
}

const fn s(
    key: &'static str,
    env: &'static str,
    default: &'static str,
    meaning: &'static str,
) -> HelperSetting {
    HelperSetting {
        key,
        env,
        default,
        meaning,
    }
}

/// The keys, in the order the shipped `/etc/rxmigrate.conf` lists them.
pub const HELPER_SETTINGS: &[HelperSetting] = &[
    s(
        "policy",
        "RXMIGRATE_POLICY",
        "hotpage",
        "Pre-copy policy of live saves: hotpage (pages written round after round are held \
         back to the final round), xen4 (as Xen's own helper), xen33 (Xen 3.3's), paper, hotpeek; \
         NAME+ac adds auto-converge (as auto_converge = yes).",
    ),
    s(
        "max_rounds",
        "RXMIGRATE_MAX_ROUNDS",
        "5 (xen33: 29)",
        "Live rounds at most before the guest is paused.",
    ),
    s(
        "target_dirty",
        "RXMIGRATE_TARGET_DIRTY",
        "50",
        "Stop the live rounds once fewer pages than this are dirty.",
    ),
    s(
        "max_factor",
        "RXMIGRATE_MAX_FACTOR",
        "3",
        "Never send more than this many times the guest's memory.",
    ),
    s(
        "hot_threshold",
        "RXMIGRATE_HOT_THRESHOLD",
        "2",
        "Consecutive dirty observations that make a page hot.",
    ),
    s(
        "hot_release",
        "RXMIGRATE_HOT_RELEASE",
        "yes",
        "Send hot pages that cooled down in the live rounds again.",
    ),
    s(
        "downtime_target_ms",
        "RXMIGRATE_DOWNTIME_TARGET_MS",
        "20",
        "hotpage: switch over once the final round fits this many milliseconds at the \
         measured bandwidth, sending the coldest held pages live if needed (0: off).",
    ),
    s(
        "auto_converge",
        "RXMIGRATE_AUTO_CONVERGE",
        "no",
        "Throttle the guest (its scheduler cap, put back afterwards) when the final round \
         cannot fit downtime_target_ms otherwise; needs a target above 0.",
    ),
    s(
        "hv",
        "RXMIGRATE_HV",
        "xen",
        "Hypervisor backend. Packaged builds drive Xen only; the simulated host (sim:DIR) is \
         for test builds and is ignored with a warning otherwise.",
    ),
    s(
        "stats",
        "RXMIGRATE_STATS",
        "none",
        "Append JSON lines to this file: a save's rounds and summary, a restore's page-data \
         times (a regular file owned by root, created 0600, never through a symbolic link).",
    ),
    s(
        "stock_helper",
        "RXMIGRATE_STOCK_HELPER",
        "libxl-save-helper.stock beside the path libxl ran",
        "Xen's own helper, run for the streams rxmigrate leaves to it.",
    ),
    s(
        "fallback",
        "RXMIGRATE_FALLBACK",
        "stock",
        "Without a usable hypervisor backend: hand the run to Xen's helper (stock) or fail \
         (fail).",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_variables_are_unique_and_named_alike() {
        for (i, a) in HELPER_SETTINGS.iter().enumerate() {
            assert_eq!(a.env, format!("RXMIGRATE_{}", a.key.to_uppercase()));
            assert!(!a.meaning.is_empty() && !a.default.is_empty(), "{}", a.key);
            for b in &HELPER_SETTINGS[i + 1..] {
                assert_ne!(a.key, b.key);
            }
        }
    }

    #[test]
    fn every_policy_name_is_documented() {
        let policy = HELPER_SETTINGS.iter().find(|s| s.key == "policy").unwrap();
        for name in crate::precopy::POLICY_NAMES_ACCEPTED {
            assert!(policy.meaning.contains(name), "policy {name} undocumented");
        }
    }
}
