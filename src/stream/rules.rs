//! The libxc stream's ordering rules (docs/REFERENCE.md §4.6, §6), shared by
//! the reader and the writer: which records a domain type allows, what must
//! come before what, and the facts later records are checked against.

use super::codec::BodyCtx;
use super::error::{invalid, ErrorKind};
use super::record::{libxc_type_name, rec_type, DomainType, Record};

#[derive(Debug, Clone)]
pub(crate) struct Rules {
    version: u32,
    domain: DomainType,
    strict: bool,
    /// STATIC_DATA_END seen (v3) or inferred (v2).
    static_data_end: bool,
    guest_width: Option<u8>,
    max_pfn: Option<u64>,
    ended: bool,
}

impl Rules {
    pub(crate) fn new(version: u32, domain: DomainType, strict: bool) -> Self {
        Rules {
            version,
            domain,
            strict,
            static_data_end: false,
            guest_width: None,
            max_pfn: None,
            ended: false,
        }
    }

    pub(crate) fn body_ctx(&self) -> BodyCtx {
        BodyCtx {
            domain: self.domain,
            guest_width: self.guest_width,
            max_pfn: self.max_pfn,
            strict: self.strict,
        }
    }

    /// STATIC_DATA_END seen (v3) or inferred (v2).
    pub(crate) fn static_data_ended(&self) -> bool {
        self.static_data_end
    }

    pub(crate) fn ended(&self) -> bool {
        self.ended
    }

    /// Checks that a record of type `rtype` may come next; called with the
    /// record header, before its body is read. Infers STATIC_DATA_END for
    /// version 2 streams where Xen's restore does.
    pub(crate) fn admit(&mut self, rtype: u32) -> Result<(), ErrorKind> {
        use rec_type::*;
        if self.ended {
            return Err(invalid("record after END"));
        }
        let pv = self.domain == DomainType::X86Pv;
        let name = libxc_type_name(rtype);
        match rtype {
            END | VERIFY | CHECKPOINT | X86_TSC_INFO => {}
            PAGE_DATA => {
                self.need_static_data_end(name)?;
                if pv && self.max_pfn.is_none() {
                    return Err(invalid("PAGE_DATA before X86_PV_P2M_FRAMES in a PV stream"));
                }
            }
            X86_PV_INFO => {
                self.pv_only(name)?;
                if self.guest_width.is_some() {
                    return Err(invalid("second X86_PV_INFO record"));
                }
                self.before_static_data_end(name)?;
            }
            X86_PV_P2M_FRAMES => {
                self.pv_only(name)?;
                if self.guest_width.is_none() {
                    return Err(invalid("X86_PV_P2M_FRAMES before X86_PV_INFO"));
                }
                self.need_static_data_end(name)?;
            }
            X86_PV_VCPU_BASIC | X86_PV_VCPU_EXTENDED | X86_PV_VCPU_XSAVE | X86_PV_VCPU_MSRS
            | SHARED_INFO => {
                self.pv_only(name)?;
                if self.guest_width.is_none() {
                    return Err(invalid(format!("{name} before X86_PV_INFO")));
                }
            }
            HVM_CONTEXT | HVM_PARAMS => {
                if pv {
                    return Err(invalid(format!(
                        "{name} is HVM-only but this is a PV stream"
                    )));
                }
            }
            TOOLSTACK => {
                return Err(invalid(
                    "TOOLSTACK (0xb) is deprecated and refused by Xen's restore",
                ))
            }
            CHECKPOINT_DIRTY_PFN_LIST => {
                if self.strict {
                    return Err(invalid(
                        "CHECKPOINT_DIRTY_PFN_LIST belongs on the COLO back-channel, not in a stream",
                    ));
                }
            }
            STATIC_DATA_END => {
                if self.version < 3 {
                    return Err(invalid("STATIC_DATA_END in a version 2 stream"));
                }
                if self.static_data_end {
                    return Err(invalid("second STATIC_DATA_END record"));
                }
            }
            X86_CPUID_POLICY | X86_MSR_POLICY => {
                if self.version < 3 {
                    return Err(invalid(format!("{name} in a version 2 stream")));
                }
                self.before_static_data_end(name)?;
            }
            t if t & OPTIONAL != 0 => {
                if self.strict {
                    return Err(invalid(format!("unknown optional record type {t:#010x}")));
                }
            }
            t => {
                return Err(invalid(format!("unknown mandatory record type {t:#010x}")));
            }
        }
        Ok(())
    }

    /// Takes note of a record that was read or written.
    pub(crate) fn commit(&mut self, rec: &Record) {
        match rec {
            Record::End => self.ended = true,
            Record::StaticDataEnd => self.static_data_end = true,
            Record::X86PvInfo { guest_width, .. } => self.guest_width = Some(*guest_width),
            Record::X86PvP2mFrames { end_pfn, .. } => {
                // Xen's restore only ever grows its p2m.
                let end = u64::from(*end_pfn);
                self.max_pfn = Some(self.max_pfn.map_or(end, |m| m.max(end)));
            }
            _ => {}
        }
    }

    fn pv_only(&self, name: &str) -> Result<(), ErrorKind> {
        if self.domain == DomainType::X86Pv {
            Ok(())
        } else {
            Err(invalid(format!(
                "{name} is PV-only but this is an HVM stream"
            )))
        }
    }

    /// Memory content: v3 needs STATIC_DATA_END first, v2 infers it here.
    fn need_static_data_end(&mut self, name: &str) -> Result<(), ErrorKind> {
        if !self.static_data_end {
            if self.version < 3 {
                self.static_data_end = true;
            } else {
                return Err(invalid(format!("{name} before STATIC_DATA_END")));
            }
        }
        Ok(())
    }

    /// Static data: must precede STATIC_DATA_END.
    fn before_static_data_end(&self, name: &str) -> Result<(), ErrorKind> {
        if self.static_data_end {
            Err(invalid(format!("{name} after STATIC_DATA_END")))
        } else {
            Ok(())
        }
    }
}
