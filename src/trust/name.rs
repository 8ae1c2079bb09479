//! Domain names from a stream or a command line, checked before any path,
//! argument or xenstore entry is made from them.
//!
//! libxl itself checks little: a name must be given and be unique
//! (libxl__domain_rename); xl takes an all-digit qualifier for a domain id
//! (libxl_domain_qualifier_to_domid), so such a name cannot be addressed.
//! Names become file names here (QEMU's log `/var/log/xen/qemu-dm-NAME.log`,
//! as libxl names it) and command-line words, so the rule is stricter than
//! libxl's and the same everywhere: see [`check_domain_name`].

/// The longest name accepted: `qemu-dm-NAME--migratedaway.log.10` (libxl's
/// log name, our longest rename suffix, libxl's log rotation) must fit a
/// file name of 255 bytes.
pub const MAX_NAME_LEN: usize = 255 - "qemu-dm-".len() - "--migratedaway".len() - ".log.10".len();

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("is empty")]
    Empty,
    #[error("is {0} bytes long (at most {MAX_NAME_LEN})")]
    TooLong(usize),
    #[error("contains '/' (a name must not be a path)")]
    Slash,
    #[error("is '.' or '..' (a name must not be a path)")]
    Dots,
    #[error("is all digits (xl would take it for a domain id)")]
    AllDigits,
    #[error("starts with '-' (it would read as an option)")]
    LeadingDash,
    #[error("contains a control character (byte {byte:#04x} at {at})")]
    Control { byte: u32, at: usize },
}

/// A domain name is non-empty, at most [`MAX_NAME_LEN`] bytes, contains no
/// '/' and no control character (C0, DEL, C1), is not '.' or '..', is not
/// all digits and does not start with '-'. Any such name, with our suffixes
/// (`--incoming`, `--migratedaway`), is one file name component.
pub fn check_domain_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    if let Some((at, c)) = name.char_indices().find(|(_, c)| c.is_control()) {
        return Err(NameError::Control { byte: c as u32, at });
    }
    if name.contains('/') {
        return Err(NameError::Slash);
    }
    if name == "." || name == ".." {
        return Err(NameError::Dots);
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NameError::AllDigits);
    }
    if name.starts_with('-') {
        return Err(NameError::LeadingDash);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_pass() {
        for n in [
            "web",
            "hvm-lab",
            "guest 1",
            "db.example.org",
            "a,b",
            "x=y",
            "..hidden",
            "1web",
            "web--incoming",
            "ünïcode",
        ] {
            assert_eq!(check_domain_name(n), Ok(()), "{n}");
        }
        assert_eq!(check_domain_name(&"a".repeat(MAX_NAME_LEN)), Ok(()));
    }

    #[test]
    fn path_like_and_ambiguous_names_are_refused() {
        use NameError::*;
        let cases: &[(&str, NameError)] = &[
            ("", Empty),
            ("../../../../x", Slash),
            ("a/b", Slash),
            ("/", Slash),
            ("..", Dots),
            (".", Dots),
            ("12", AllDigits),
            ("-name", LeadingDash),
            ("a\nb", Control { byte: 10, at: 1 }),
            ("a\u{7f}", Control { byte: 0x7f, at: 1 }),
            ("a\u{85}", Control { byte: 0x85, at: 1 }),
            ("\0", Control { byte: 0, at: 0 }),
        ];
        for (n, want) in cases {
            assert_eq!(check_domain_name(n).as_ref(), Err(want), "{n:?}");
        }
        assert_eq!(
            check_domain_name(&"a".repeat(MAX_NAME_LEN + 1)),
            Err(TooLong(MAX_NAME_LEN + 1))
        );
    }

    #[test]
    fn the_longest_name_still_makes_one_file_name() {
        let n = "n".repeat(MAX_NAME_LEN);
        assert_eq!(format!("qemu-dm-{n}--migratedaway.log.10").len(), 255);
    }
}
