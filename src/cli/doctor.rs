//! `rxmigrate doctor`: the checks of [`crate::doctor`], printed one per
//! line; exit 0 when the host is ready, 1 when not.

use crate::doctor::checks;
use crate::doctor::facts::{self, HvChoice, Options};
use crate::restore::parse_size;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug, Clone)]
pub struct DoctorArgs {
    /// Look for files (the save helper, dpkg's diversions, the settings,
    /// the keys) under this directory instead of / (a system image).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// The save helper's settings file [default: ROOT/etc/rxmigrate.conf].
    #[arg(long, value_name = "FILE")]
    pub conf: Option<PathBuf>,
    /// Key directory [default: $RXMIGRATE_KEY_DIR, else ROOT/etc/rxmigrate].
    #[arg(long, value_name = "DIR")]
    pub key_dir: Option<PathBuf>,
    /// Free memory a receiving host should have.
    #[arg(long, value_name = "SIZE", default_value = "256M")]
    pub min_free: String,
}

/// Run the checks and print them; the exit status.
pub fn run(hv: Option<&str>, a: &DoctorArgs) -> ExitCode {
    let min_free = match parse_size(&a.min_free) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("rxmigrate: --min-free: {e}");
            return ExitCode::from(2);
        }
    };
    // Xen unless a simulated host is named: the doctor examines this host,
    // never falls back to a simulated one.
    let env = std::env::var("RXMIGRATE_HV").ok().filter(|s| !s.is_empty());
    let choice = match hv.map(str::to_string).or(env).as_deref() {
        None | Some("xen") => HvChoice::Xen,
        Some(s) => match s.strip_prefix("sim:") {
            Some(dir) if !dir.is_empty() => HvChoice::Sim(PathBuf::from(dir)),
            _ => {
                eprintln!("rxmigrate: --hv {s:?}: expected sim:DIR or xen");
                return ExitCode::from(2);
            }
        },
    };
    let on_host = a.root == std::path::Path::new("/");
    let opts = Options {
        hv: choice,
        root: a.root.clone(),
        conf: a.conf.clone(),
        key_dir: a.key_dir.clone().or_else(|| {
            on_host
                .then(|| std::env::var_os(crate::transport::keys::KEY_DIR_ENV).map(PathBuf::from))
                .flatten()
        }),
        env_helper: on_host
            .then(|| std::env::var_os("LIBXL_SAVE_HELPER").map(PathBuf::from))
            .flatten(),
        min_free,
    };
    println!("rxmigrate {}", *crate::version::LONG);
    let facts = facts::gather(&opts);
    let report = checks::run(&opts, &facts);
    print!("{report}");
    if report.ready() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
