//! Settings: `/etc/rxmigrate.conf` (or `$RXMIGRATE_CONF`), then the
//! environment, which wins. xl passes its environment on to the helper, so
//! `RXMIGRATE_POLICY=xen4 xl migrate ...` works for one run.
//!
//! The file holds `key = value` lines; `#` starts a comment. Keys and their
//! environment variables:
//!
//! | key | env | meaning |
//! |---|---|---|
//! | `policy` | `RXMIGRATE_POLICY` | `hotpage` (default; also `paper`), `hotpeek`, `xen4`, `xen33` |
//! | `max_rounds` | `RXMIGRATE_MAX_ROUNDS` | live rounds at most (29 for xen33, else 5) |
//! | `target_dirty` | `RXMIGRATE_TARGET_DIRTY` | stop under this many dirty pages (50) |
//! | `max_factor` | `RXMIGRATE_MAX_FACTOR` | never send more than this × memory (3) |
//! | `hot_threshold` | `RXMIGRATE_HOT_THRESHOLD` | dirty observations that make a page hot (2) |
//! | `hot_release` | `RXMIGRATE_HOT_RELEASE` | send cooled hot pages live again (`yes`) |
//! | `downtime_target_ms` | `RXMIGRATE_DOWNTIME_TARGET_MS` | hotpage: final-round budget in ms at the measured bandwidth (20; 0 = off) |
//! | `auto_converge` | `RXMIGRATE_AUTO_CONVERGE` | throttle the guest (Xen: scheduler cap) when the final round cannot fit `downtime_target_ms` otherwise (`no`; needs a target above 0) |
//! | `hv` | `RXMIGRATE_HV` | hypervisor: `xen` (default) or `sim:DIR` |
//! | `stats` | `RXMIGRATE_STATS` | append JSON lines to this file: a save's rounds and summary, a restore's page-data times |
//! | `stock_helper` | `RXMIGRATE_STOCK_HELPER` | Xen's own helper, for streams rxmigrate leaves to it |
//! | `fallback` | `RXMIGRATE_FALLBACK` | `stock` (default): without a usable hypervisor backend hand over to the stock helper; `fail`: fail instead |
//!
//! The helper runs as root under xl: the file is read only if it is a
//! trusted file (`rxmigrate::trust::files`: a regular file owned by root,
//! writable by no one else, in directories likewise); otherwise the run
//! fails, naming the file and why. `RXMIGRATE_CONF=/dev/null` means no file.
//! Errors quote no line of the file (it might not be a settings file).
//! The simulated host (`hv = sim:DIR`) is honoured only by builds with the
//! `sim-env` feature (the tests'); other builds drive Xen and say so.

use rxmigrate::precopy::PolicySpec;
use rxmigrate::precopy::{parse_name, HotPageParams, Policy};
use rxmigrate::trust::files::{check_trusted_file, Why};
use std::io::Read;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONF: &str = "/etc/rxmigrate.conf";
/// A settings file larger than this is not one.
const MAX_CONF_BYTES: u64 = 64 * 1024;

/// Whether this build may drive the simulated host (feature `sim-env`,
/// enabled by the plugin's own tests only).
pub const SIM_ENV: bool = cfg!(feature = "sim-env");

/// The backend setting a build honours: any with `sim_allowed`, else only
/// `xen` (the default). Returns the setting and, if one was dropped, why.
pub fn hv_choice(setting: Option<String>, sim_allowed: bool) -> (Option<String>, Option<String>) {
    match setting {
        Some(hv) if !sim_allowed && hv != "xen" => (
            None,
            Some(format!(
                "hypervisor setting {hv:?} ignored: this build drives Xen only (the simulated \
                 host is for test builds, feature sim-env)"
            )),
        ),
        s => (s, None),
    }
}

/// The settings file's text, if it is to be read: `None` for /dev/null and
/// for a default file that does not exist.
fn read_conf(path: &Path, explicit: bool) -> Result<Option<String>, ConfigError> {
    if path == Path::new("/dev/null") {
        return Ok(None);
    }
    let fail = |msg: String| ConfigError {
        place: path.display().to_string(),
        msg,
    };
    let real = match check_trusted_file(path) {
        Ok(r) => r,
        Err(e) => {
            return match e.why {
                Why::Io(io) if io.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(None),
                Why::Io(io) => Err(fail(format!("cannot read it: {io}"))),
                why => Err(fail(format!(
                    "refused: it {why}; settings are read only from a regular file owned by \
                     root that no one else can write, in directories likewise"
                ))),
            }
        }
    };
    let mut text = String::new();
    std::fs::File::open(&real)
        .and_then(|f| f.take(MAX_CONF_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| fail(format!("cannot read it: {e}")))?;
    if text.len() as u64 > MAX_CONF_BYTES {
        return Err(fail(format!(
            "larger than {MAX_CONF_BYTES} bytes: not a settings file"
        )));
    }
    Ok(Some(text))
}

/// A bad setting, with where it came from.
#[derive(Debug, thiserror::Error)]
#[error("{place}: {msg}")]
pub struct ConfigError {
    /// `/etc/rxmigrate.conf:3` or `environment RXMIGRATE_POLICY`.
    pub place: String,
    pub msg: String,
}

/// What to do when the engine cannot run here (no hypervisor backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    Stock,
    Fail,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub policy: String,
    pub max_rounds: Option<u32>,
    pub target_dirty: u64,
    pub max_factor: u64,
    pub hot_threshold: u8,
    pub hot_release: bool,
    pub downtime_target_ms: u64,
    pub auto_converge: bool,
    pub hv: Option<String>,
    pub stats: Option<PathBuf>,
    pub stock_helper: Option<PathBuf>,
    pub fallback: Fallback,
    /// Where each value came from, for the log.
    pub sources: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            policy: "hotpage".into(),
            max_rounds: None,
            target_dirty: 50,
            max_factor: 3,
            hot_threshold: 2,
            hot_release: true,
            downtime_target_ms: HotPageParams::default().downtime_target_ms,
            auto_converge: false,
            hv: None,
            stats: None,
            stock_helper: None,
            fallback: Fallback::Stock,
            sources: Vec::new(),
        }
    }
}

const KEYS: &[(&str, &str)] = &[
    ("policy", "RXMIGRATE_POLICY"),
    ("max_rounds", "RXMIGRATE_MAX_ROUNDS"),
    ("target_dirty", "RXMIGRATE_TARGET_DIRTY"),
    ("max_factor", "RXMIGRATE_MAX_FACTOR"),
    ("hot_threshold", "RXMIGRATE_HOT_THRESHOLD"),
    ("hot_release", "RXMIGRATE_HOT_RELEASE"),
    ("downtime_target_ms", "RXMIGRATE_DOWNTIME_TARGET_MS"),
    ("auto_converge", "RXMIGRATE_AUTO_CONVERGE"),
    ("hv", "RXMIGRATE_HV"),
    ("stats", "RXMIGRATE_STATS"),
    ("stock_helper", "RXMIGRATE_STOCK_HELPER"),
    ("fallback", "RXMIGRATE_FALLBACK"),
];

fn number<T: std::str::FromStr>(v: &str, what: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{v:?} is not a valid {what}"))
}

fn yes_no(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Ok(true),
        "0" | "no" | "false" | "off" => Ok(false),
        _ => Err(format!("{v:?} is not yes or no")),
    }
}

/// An unknown key, quoted only if it looks like one.
fn unknown_key(key: &str) -> String {
    let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
    let shown = if key.len() <= 32 && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        format!("{key:?}")
    } else {
        "(not shown)".into()
    };
    format!("unknown key {shown} (known: {})", known.join(", "))
}

impl Config {
    /// The file (if present; an explicitly named file must exist), then the
    /// environment.
    pub fn load() -> Result<Config, ConfigError> {
        let explicit = std::env::var_os("RXMIGRATE_CONF").filter(|v| !v.is_empty());
        let path = explicit
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONF));
        let mut c = Config::default();
        if let Some(text) = read_conf(&path, explicit.is_some())? {
            c.apply_file(&path, &text)?;
        }
        c.apply_env(|k| std::env::var(k).ok())?;
        let (hv, dropped) = hv_choice(c.hv.take(), SIM_ENV);
        if let Some(why) = dropped {
            log::warn!("{why}");
        }
        c.hv = hv;
        c.check()?;
        Ok(c)
    }

    /// The settings `path` holds, over the defaults, as the helper would
    /// read them (a missing file means the defaults), without the
    /// environment: `rxmigrate-save-helper --check-config`, which `rxmigrate
    /// doctor` runs.
    pub fn check_file(path: &Path) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        if let Some(text) = read_conf(path, false)? {
            c.apply_file(path, &text)?;
        }
        let (hv, _) = hv_choice(c.hv.take(), SIM_ENV);
        c.hv = hv;
        c.check()?;
        Ok(c)
    }

    /// Apply `key = value` lines.
    pub fn apply_file(&mut self, path: &Path, text: &str) -> Result<(), ConfigError> {
        for (n, line) in text.lines().enumerate() {
            let place = || format!("{}:{}", path.display(), n + 1);
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            // The line itself is not quoted: the file may not be a settings
            // file at all, and xl's log is no place for its contents.
            let Some((k, v)) = line.split_once('=') else {
                return Err(ConfigError {
                    place: place(),
                    msg: "expected `key = value`".into(),
                });
            };
            let (k, v) = (k.trim(), v.trim().trim_matches('"'));
            if !KEYS.iter().any(|(key, _)| *key == k) {
                return Err(ConfigError {
                    place: place(),
                    msg: unknown_key(k),
                });
            }
            self.set(k, v).map_err(|msg| ConfigError {
                place: place(),
                msg,
            })?;
            self.sources.push(format!("{k} from {}", place()));
        }
        Ok(())
    }

    /// Apply the `RXMIGRATE_*` variables `get` returns.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for (key, var) in KEYS {
            if let Some(v) = get(var).filter(|v| !v.is_empty()) {
                self.set(key, &v).map_err(|msg| ConfigError {
                    place: format!("environment {var}"),
                    msg,
                })?;
                self.sources.push(format!("{key} from {var}"));
            }
        }
        Ok(())
    }

    fn set(&mut self, key: &str, v: &str) -> Result<(), String> {
        match key {
            "policy" => {
                // NAME+ac: the policy with auto-converge (as auto_converge = yes).
                let (name, ac) = parse_name(v).map_err(|e| e.to_string())?;
                self.policy = name.to_string();
                self.auto_converge |= ac;
            }
            "max_rounds" => self.max_rounds = Some(number(v, "round count")?),
            "target_dirty" => self.target_dirty = number(v, "page count")?,
            "max_factor" => self.max_factor = number(v, "factor")?,
            "hot_threshold" => self.hot_threshold = number(v, "observation count (0-255)")?,
            "hot_release" => self.hot_release = yes_no(v)?,
            "downtime_target_ms" => self.downtime_target_ms = number(v, "time in ms")?,
            "auto_converge" => self.auto_converge = yes_no(v)?,
            "hv" => self.hv = Some(v.to_string()),
            "stats" => self.stats = Some(PathBuf::from(v)),
            "stock_helper" => self.stock_helper = Some(PathBuf::from(v)),
            "fallback" => {
                self.fallback = match v {
                    "stock" => Fallback::Stock,
                    "fail" => Fallback::Fail,
                    _ => return Err(format!("{v:?}: expected stock or fail")),
                }
            }
            _ => return Err(unknown_key(key)),
        }
        Ok(())
    }

    /// Catch bad policy parameters now rather than in the middle of a save.
    fn check(&self) -> Result<(), ConfigError> {
        self.policy().map(drop)
    }

    fn policy_spec(&self) -> PolicySpec {
        PolicySpec {
            policy: self.policy.clone(),
            max_rounds: self.max_rounds,
            target_dirty: self.target_dirty,
            max_factor: self.max_factor,
            hot_threshold: self.hot_threshold,
            release_cooled: self.hot_release,
            downtime_target_ms: self.downtime_target_ms,
            auto_converge: self.auto_converge,
        }
    }

    /// A fresh policy for one save.
    pub fn policy(&self) -> Result<Box<dyn Policy>, ConfigError> {
        self.policy_spec().build().map_err(|e| ConfigError {
            place: "policy settings".into(),
            msg: format!("{e:#}"),
        })
    }

    /// One line for the log: the policy and its parameters.
    pub fn describe_policy(&self) -> String {
        let rounds = self
            .max_rounds
            .unwrap_or(if self.policy == "xen33" { 29 } else { 5 });
        let line = self.describe_base(rounds);
        if self.auto_converge {
            format!(
                "{line}, auto-converge (downtime_target_ms {})",
                self.downtime_target_ms
            )
        } else {
            line
        }
    }

    fn describe_base(&self, rounds: u32) -> String {
        match self.policy.as_str() {
            p @ ("hotpage" | "paper" | "hotpeek") => format!(
                "policy {p} (max_rounds {rounds}, target_dirty {}, max_factor {}, \
                 hot_threshold {}, hot_release {}, downtime_target_ms {})",
                self.target_dirty,
                self.max_factor,
                self.hot_threshold,
                if self.hot_release { "yes" } else { "no" },
                self.downtime_target_ms
            ),
            "xen33" => format!(
                "policy xen33 (max_rounds {rounds}, min_progress {}, max_factor {})",
                self.target_dirty, self.max_factor
            ),
            p => format!(
                "policy {p} (max_rounds {rounds}, target_dirty {})",
                self.target_dirty
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The man page (rxmigrate-docgen) documents exactly the keys read here.
    #[test]
    fn keys_are_the_documented_ones() {
        let documented: Vec<(&str, &str)> = rxmigrate::helper_settings::HELPER_SETTINGS
            .iter()
            .map(|s| (s.key, s.env))
            .collect();
        assert_eq!(KEYS, documented.as_slice());
    }

    /// The man page's defaults are the ones a run without settings gets.
    #[test]
    fn documented_defaults_are_the_defaults() {
        let c = Config::default();
        let xen33 = Config {
            policy: "xen33".into(),
            ..Config::default()
        };
        let rounds = |c: &Config| {
            let d = c.describe_policy();
            let n = d
                .split("max_rounds ")
                .nth(1)
                .expect("max_rounds in the description");
            n.split([',', ')']).next().unwrap_or("").to_string()
        };
        let actual = |key: &str| -> String {
            match key {
                "policy" => c.policy.clone(),
                "max_rounds" => format!("{} (xen33: {})", rounds(&c), rounds(&xen33)),
                "target_dirty" => c.target_dirty.to_string(),
                "max_factor" => c.max_factor.to_string(),
                "hot_threshold" => c.hot_threshold.to_string(),
                "hot_release" => if c.hot_release { "yes" } else { "no" }.into(),
                "auto_converge" => if c.auto_converge { "yes" } else { "no" }.into(),
                "downtime_target_ms" => c.downtime_target_ms.to_string(),
                "hv" => c.hv.clone().unwrap_or_else(|| "xen".into()),
                "stats" => c
                    .stats
                    .as_ref()
                    .map_or("none".into(), |p| p.display().to_string()),
                "stock_helper" => c.stock_helper.as_ref().map_or(
                    "libxl-save-helper.stock beside the path libxl ran".into(),
                    |p| p.display().to_string(),
                ),
                "fallback" => match c.fallback {
                    Fallback::Stock => "stock".into(),
                    Fallback::Fail => "fail".into(),
                },
                other => panic!("documented key {other} has no default here"),
            }
        };
        for s in rxmigrate::helper_settings::HELPER_SETTINGS {
            assert_eq!(s.default, actual(s.key), "default of {}", s.key);
        }
    }

    #[test]
    fn file_then_environment() {
        let mut c = Config::default();
        c.apply_file(
            Path::new("/etc/rxmigrate.conf"),
            "# comment\n policy = xen4 \nmax_rounds=7 # trailing\n\nstats = \"/var/log/rx.jsonl\"\n",
        )
        .unwrap();
        assert_eq!(c.policy, "xen4");
        assert_eq!(c.max_rounds, Some(7));
        assert_eq!(c.stats.as_deref(), Some(Path::new("/var/log/rx.jsonl")));
        c.apply_env(|k| (k == "RXMIGRATE_POLICY").then(|| "hotpage".to_string()))
            .unwrap();
        assert_eq!(c.policy, "hotpage");
        assert_eq!(c.max_rounds, Some(7));
        assert!(c.describe_policy().contains("max_rounds 7"));
        assert_eq!(c.policy().unwrap().name(), "hotpage");
    }

    #[test]
    fn downtime_target_from_file_and_environment() {
        let mut c = Config::default();
        assert_eq!(c.downtime_target_ms, 20);
        c.apply_file(Path::new("f"), "downtime_target_ms = 5\n")
            .unwrap();
        assert_eq!(c.downtime_target_ms, 5);
        c.apply_env(|k| (k == "RXMIGRATE_DOWNTIME_TARGET_MS").then(|| "0".to_string()))
            .unwrap();
        assert_eq!(c.downtime_target_ms, 0);
        assert!(c.describe_policy().contains("downtime_target_ms 0"));
        assert_eq!(c.policy_spec().downtime_target_ms, 0);
        let e = c
            .apply_file(Path::new("f"), "downtime_target_ms = soon\n")
            .unwrap_err();
        assert_eq!(e.to_string(), "f:1: \"soon\" is not a valid time in ms");
    }

    #[test]
    fn a_policy_name_with_ac_turns_auto_converge_on() {
        let mut c = Config::default();
        c.apply_env(|k| (k == "RXMIGRATE_POLICY").then(|| "hotpage+ac".to_string()))
            .unwrap();
        assert!(c.auto_converge);
        assert_eq!(c.policy().unwrap().name(), "hotpage+ac");
        let err = Config::default()
            .apply_env(|k| (k == "RXMIGRATE_POLICY").then(|| "fast+ac".to_string()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown policy \"fast+ac\""), "{err}");
    }

    #[test]
    fn auto_converge_from_file_and_environment() {
        let mut c = Config::default();
        assert!(!c.auto_converge);
        c.apply_file(Path::new("f"), "policy = xen4\nauto_converge = yes\n")
            .unwrap();
        assert!(c.auto_converge);
        assert_eq!(c.policy().unwrap().name(), "xen4+ac");
        assert!(
            c.describe_policy()
                .ends_with("auto-converge (downtime_target_ms 20)"),
            "{}",
            c.describe_policy()
        );
        c.apply_env(|k| (k == "RXMIGRATE_AUTO_CONVERGE").then(|| "no".to_string()))
            .unwrap();
        assert_eq!(c.policy().unwrap().name(), "xen4");
        // With a downtime target of 0 there is nothing to converge to.
        c.apply_env(|k| match k {
            "RXMIGRATE_AUTO_CONVERGE" => Some("on".into()),
            "RXMIGRATE_DOWNTIME_TARGET_MS" => Some("0".into()),
            _ => None,
        })
        .unwrap();
        let e = c.check().unwrap_err();
        assert!(e.to_string().contains("above 0 ms"), "{e}");
        let e = c
            .apply_env(|k| (k == "RXMIGRATE_AUTO_CONVERGE").then(|| "sometimes".to_string()))
            .unwrap_err();
        assert!(e.to_string().contains("not yes or no"), "{e}");
    }

    #[test]
    fn errors_name_the_place() {
        let mut c = Config::default();
        let e = c
            .apply_file(
                Path::new("/etc/rxmigrate.conf"),
                "policy = hotpage\nmax_rounds = many\n",
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/rxmigrate.conf:2: \"many\" is not a valid round count"
        );
        let e = c.apply_file(Path::new("f"), "polcy = xen4").unwrap_err();
        assert!(
            e.to_string().starts_with("f:1: unknown key \"polcy\""),
            "{e}"
        );
        let e = c.apply_file(Path::new("f"), "just words").unwrap_err();
        assert_eq!(e.to_string(), "f:1: expected `key = value`");
        // Nothing of a file that is not a settings file reaches the log.
        let e = c
            .apply_file(
                Path::new("/etc/shadow"),
                "root:$y$j9T$secret:19000:0:99999:7:::\n",
            )
            .unwrap_err();
        assert_eq!(e.to_string(), "/etc/shadow:1: expected `key = value`");
        let e = c
            .apply_file(Path::new("f"), "password = hunter2\n")
            .unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = c
            .apply_file(Path::new("f"), "Secret Key = x\n")
            .unwrap_err();
        assert!(
            e.to_string().starts_with("f:1: unknown key (not shown)"),
            "{e}"
        );
        let e = c
            .apply_env(|k| (k == "RXMIGRATE_POLICY").then(|| "fast".to_string()))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("environment RXMIGRATE_POLICY: unknown policy"),
            "{e}"
        );
        let e = c
            .apply_env(|k| (k == "RXMIGRATE_HOT_RELEASE").then(|| "maybe".to_string()))
            .unwrap_err();
        assert!(e.to_string().contains("not yes or no"), "{e}");
    }

    #[test]
    fn the_simulated_host_is_for_test_builds_only() {
        let sim = Some("sim:/tmp/h".to_string());
        // A release build: the setting is dropped, with the reason.
        let (hv, why) = hv_choice(sim.clone(), false);
        assert_eq!(hv, None);
        assert!(why.unwrap().contains("\"sim:/tmp/h\" ignored"));
        assert_eq!(
            hv_choice(Some("xen".into()), false),
            (Some("xen".into()), None)
        );
        assert_eq!(hv_choice(None, false), (None, None));
        // A test build keeps it.
        assert_eq!(hv_choice(sim.clone(), true), (sim, None));
        // These tests are built with the feature (the dev-dependency on
        // this package enables it): the build fails otherwise.
        const { assert!(SIM_ENV) };
    }

    #[test]
    fn settings_files_must_be_roots_and_unwritable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("rxmigrate.conf");
        std::fs::write(&f, "policy = xen4\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        match check_trusted_file(&f) {
            Ok(_) => {}
            Err(e) => {
                eprintln!("SKIPPED: the temporary directory is not a safe chain: {e}");
                return;
            }
        }
        assert_eq!(
            read_conf(&f, true).unwrap().as_deref(),
            Some("policy = xen4\n")
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o664)).unwrap();
        let e = read_conf(&f, true).unwrap_err().to_string();
        assert!(
            e.contains("refused: it is writable by group or others"),
            "{e}"
        );
        assert!(!e.contains("xen4"), "{e}");
        assert_eq!(read_conf(Path::new("/dev/null"), true).unwrap(), None);
        assert_eq!(read_conf(&d.path().join("absent"), false).unwrap(), None);
        let e = read_conf(&d.path().join("absent"), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read it"), "{e}");
    }
}
