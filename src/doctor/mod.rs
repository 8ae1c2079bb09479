//! `rxmigrate doctor`: is this host ready for rxmigrate and its xl plugin?
//!
//! [`facts`] gathers what the host has (the hypervisor, the libraries, the
//! save helper xl runs, the settings file, the keys), [`checks`] turns the
//! facts into one verdict per line with the fix for each that fails. The
//! CLI (`src/cli/doctor.rs`) prints them. Every file is looked up under a
//! root directory (`/` on a host; a system image in tests), the hypervisor
//! is Xen or, for tests, the simulated host.

pub mod checks;
pub mod facts;
pub mod helper;

use std::fmt;

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Short name: `xen`, `privcmd`, `libxenctrl`, `save-helper`, …
    pub name: String,
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// What to do about it (for a failed check).
    pub fix: Option<String>,
    /// Whether a failure makes the host not ready (some checks only
    /// inform: no HAP, no authorized senders).
    pub required: bool,
}

impl Check {
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            ok: true,
            detail: detail.into(),
            fix: None,
            required: true,
        }
    }

    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
            required: true,
        }
    }

    /// The same check, not counted against readiness.
    pub fn optional(mut self) -> Check {
        self.required = false;
        self
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.ok { '✓' } else { '✗' };
        write!(f, "{mark} {}: {}", self.name, self.detail)?;
        if !self.ok && !self.required {
            write!(f, " (not required)")?;
        }
        if let (false, Some(fix)) = (self.ok, &self.fix) {
            write!(f, " — fix: {fix}")?;
        }
        Ok(())
    }
}

/// All the lines, in order.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// No required check failed.
    pub fn ready(&self) -> bool {
        self.checks.iter().all(|c| c.ok || !c.required)
    }

    /// The required checks that failed.
    pub fn failed(&self) -> usize {
        self.checks.iter().filter(|c| !c.ok && c.required).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            writeln!(f, "{c}")?;
        }
        match self.failed() {
            0 => writeln!(f, "ready"),
            1 => writeln!(f, "not ready: 1 check failed"),
            n => writeln!(f, "not ready: {n} checks failed"),
        }
    }
}
