//! A policy by name and parameters, as the CLI's options and the xl
//! plugin's config file give it: one place that builds a [`Policy`] from
//! them.

use super::{
    AutoConverge, ConvergeParams, HotPage, HotPageParams, Policy, PolicyError, Xen33, Xen33Params,
    Xen4, Xen4Params,
};

/// Which policy, with which parameters. Unset `max_rounds` takes the
/// policy's own default (29 for xen33, 5 otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    pub policy: String,
    pub max_rounds: Option<u32>,
    /// Stop when fewer pages than this are dirty (xen33: sent + skipped).
    pub target_dirty: u64,
    /// Never send more than this many times guest memory (xen33, hotpage).
    pub max_factor: u64,
    /// hotpage: consecutive dirty observations that make a page hot.
    pub hot_threshold: u8,
    /// hotpage: release held pages that cool down.
    pub release_cooled: bool,
    /// hotpage: downtime target for the final round, ms (0: off); also
    /// auto-converge's target, which must not be 0.
    pub downtime_target_ms: u64,
    /// Throttle the guest when the final round cannot fit the downtime
    /// target otherwise ([`AutoConverge`]); a policy named `NAME+ac` has it
    /// too.
    pub auto_converge: bool,
}

impl Default for PolicySpec {
    fn default() -> Self {
        let hot = HotPageParams::default();
        PolicySpec {
            policy: "hotpage".into(),
            max_rounds: None,
            target_dirty: 50,
            max_factor: 3,
            hot_threshold: hot.hot_threshold,
            release_cooled: hot.release_cooled,
            downtime_target_ms: hot.downtime_target_ms,
            auto_converge: false,
        }
    }
}

impl PolicySpec {
    /// A fresh policy for one save.
    pub fn build(&self) -> Result<Box<dyn Policy>, PolicyError> {
        let (base, suffixed) = super::parse_name(&self.policy)?;
        let inner = self.build_base(base)?;
        if !(suffixed || self.auto_converge) {
            return Ok(inner);
        }
        Ok(Box::new(AutoConverge::new(
            inner,
            ConvergeParams {
                downtime_target_ms: self.downtime_target_ms,
                ..ConvergeParams::default()
            },
        )?))
    }

    fn build_base(&self, name: &str) -> Result<Box<dyn Policy>, PolicyError> {
        Ok(match name {
            "xen33" => Box::new(Xen33::new(Xen33Params {
                max_rounds: self.max_rounds.unwrap_or(29),
                min_progress: self.target_dirty,
                max_factor: self.max_factor,
            })),
            "xen4" => Box::new(Xen4::new(Xen4Params {
                max_rounds: self.max_rounds.unwrap_or(5),
                target_dirty: self.target_dirty,
            })),
            name @ ("hotpage" | "paper" | "hotpeek") => {
                let (name, base) = match name {
                    "hotpeek" => ("hotpeek", HotPageParams::hotpeek()),
                    "paper" => ("paper", HotPageParams::default()),
                    _ => ("hotpage", HotPageParams::default()),
                };
                Box::new(HotPage::named(
                    name,
                    HotPageParams {
                        hot_threshold: self.hot_threshold,
                        max_rounds: self.max_rounds.unwrap_or(5),
                        target_dirty: self.target_dirty,
                        max_factor: self.max_factor,
                        release_cooled: self.release_cooled,
                        downtime_target_ms: self.downtime_target_ms,
                        ..base
                    },
                )?)
            }
            other => return Err(PolicyError::Unknown(other.into())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_policy_builds_with_its_own_round_default() {
        for name in super::super::POLICY_NAMES_ACCEPTED {
            let spec = PolicySpec {
                policy: (*name).into(),
                ..PolicySpec::default()
            };
            assert_eq!(spec.build().unwrap().name(), *name);
        }
        let bad = PolicySpec {
            policy: "xen5".into(),
            ..PolicySpec::default()
        };
        assert!(matches!(bad.build(), Err(PolicyError::Unknown(_))));
    }

    #[test]
    fn auto_converge_by_flag_or_suffix_and_never_with_a_zero_target() {
        for (policy, flag) in [("xen4", true), ("xen4+ac", false), ("xen4+ac", true)] {
            let spec = PolicySpec {
                policy: policy.into(),
                auto_converge: flag,
                ..PolicySpec::default()
            };
            assert_eq!(spec.build().unwrap().name(), "xen4+ac");
        }
        let spec = PolicySpec {
            policy: "hotpage".into(),
            auto_converge: true,
            downtime_target_ms: 0,
            ..PolicySpec::default()
        };
        let e = spec.build().err().unwrap();
        assert!(matches!(e, PolicyError::BadParam { .. }), "{e}");
        assert!(e.to_string().contains("downtime"), "{e}");
        let off = PolicySpec {
            policy: "hotpage".into(),
            downtime_target_ms: 0,
            ..PolicySpec::default()
        };
        assert_eq!(off.build().unwrap().name(), "hotpage");
    }
}
