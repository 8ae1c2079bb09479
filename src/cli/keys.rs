//! `rxmigrate keygen`: this host's key for encrypted migrations.

use crate::transport::keys::{self, KeyDir};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Key directory [default: $RXMIGRATE_KEY_DIR, else /etc/rxmigrate];
    /// created (0700) if missing.
    #[arg(long, value_name = "DIR")]
    pub key_dir: Option<PathBuf>,
    /// Replace an existing key (peers that trust the old one will refuse
    /// this host until they are given the new key.pub).
    #[arg(long)]
    pub force: bool,
    /// Comment on the key.pub line [default: rxmigrate@HOSTNAME].
    #[arg(long)]
    pub comment: Option<String>,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Write the key pair; print the public key line (what peers put in their
/// authorized_peers, or after the host name in their known_hosts).
pub fn run(a: &KeygenArgs) -> Result<()> {
    let dir = KeyDir::resolve(a.key_dir.as_deref());
    let comment = a
        .comment
        .clone()
        .unwrap_or_else(|| format!("rxmigrate@{}", hostname()));
    let public = keys::keygen(dir.path(), &comment, a.force)?;
    eprintln!(
        "rxmigrate: wrote {} (private, 0600) and {}; fingerprint {}",
        dir.key_file().display(),
        dir.public_file().display(),
        public.fingerprint()
    );
    eprintln!(
        "rxmigrate: the public key is below: receivers this host migrates to put that line in \
         their authorized_peers; senders that migrate to this host put `HOST KEY` in their \
         known_hosts"
    );
    println!(
        "{public} {}",
        comment.split_whitespace().collect::<Vec<_>>().join("_")
    );
    Ok(())
}
