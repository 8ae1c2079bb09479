//! The lab benchmark's wire counter (ci/lab): sits between a migration's
//! sender and its receiving command and counts the bytes that pass, the
//! same way for every tool.
//!
//!   count_relay OUT -- CMD [ARGS...]
//!
//! Runs CMD with its stdin fed from ours (counted) and its stdout and
//! stderr inherited (the back channel of xl's handshake passes untouched).
//! When CMD exits, writes `bytes=N child_cpu_s=X relay_cpu_s=Y` to OUT (CPU
//! seconds of CMD and what it waited for, and of the relay) and
//! exits with CMD's status: the sender waits for its receiving command, so
//! the relay must not outlive it waiting for an end of input.

use std::io::{Read, Write};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn cpu_seconds(who: libc::c_int) -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: ru is a valid rusage to fill; `who` is RUSAGE_SELF or
    // RUSAGE_CHILDREN.
    let ru = unsafe {
        libc::getrusage(who, ru.as_mut_ptr());
        ru.assume_init()
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, cmd) = match args.split_first() {
        Some((out, rest)) if rest.first().map(String::as_str) == Some("--") && rest.len() > 1 => {
            (out.clone(), rest[1..].to_vec())
        }
        _ => {
            eprintln!("usage: count_relay OUT -- CMD [ARGS...]");
            return ExitCode::from(2);
        }
    };
    let mut child = match Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("count_relay: starting {}: {e}", cmd[0]);
            return ExitCode::from(2);
        }
    };
    let mut to_child = child.stdin.take().expect("piped stdin");
    let count = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&count);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let mut input = std::io::stdin().lock();
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if to_child.write_all(&buf[..n]).is_err() {
                break;
            }
            counted.fetch_add(n as u64, Ordering::Relaxed);
        }
        // to_child drops here: the receiver sees the end of its input.
    });
    let status = match child.wait() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("count_relay: waiting for {}: {e}", cmd[0]);
            return ExitCode::from(2);
        }
    };
    let line = format!(
        "bytes={} child_cpu_s={:.3} relay_cpu_s={:.3}\n",
        count.load(Ordering::Relaxed),
        cpu_seconds(libc::RUSAGE_CHILDREN),
        cpu_seconds(libc::RUSAGE_SELF)
    );
    if let Err(e) = std::fs::write(&out, line) {
        eprintln!("count_relay: writing {out}: {e}");
    }
    ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8)
}
