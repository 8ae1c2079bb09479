//! The man page of `rxmigrate-save-helper`, section 1. The helper has no
//! clap definition (libxl gives it a fixed positional command line), so the
//! page is written here as roff; its settings come from
//! `rxmigrate::helper_settings`, the table the plugin's key list is tested
//! against.

use rxmigrate::helper_settings::{HELPER_SETTINGS, RESTORE_ARGS, SAVE_ARGS};
use rxmigrate::version::{VERSION, XEN_RELEASES};
use std::fmt::Write as _;

/// Text for roff: backslashes and hyphens escaped, and a line that would
/// start with a control character guarded.
fn esc(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

fn b(text: &str) -> String {
    format!("\\fB{}\\fR", esc(text))
}

fn i(text: &str) -> String {
    format!("\\fI{}\\fR", esc(text))
}

/// A paragraph of plain text, with **bold** and {{italic}} spans.
fn para(page: &mut String, text: &str) {
    page.push_str(".PP\n");
    page.push_str(&spans(text));
    page.push('\n');
}

/// `**bold**` and `{{italic}}` spans of `text` in roff; the rest escaped.
/// An unmatched opening marker is text.
fn spans(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    loop {
        let next = [("**", "**"), ("{{", "}}")]
            .into_iter()
            .filter_map(|(open, close)| rest.find(open).map(|p| (p, open, close)))
            .min_by_key(|(p, _, _)| *p);
        let Some((p, open, close)) = next else { break };
        let inner = &rest[p + open.len()..];
        let Some(end) = inner.find(close) else { break };
        out.push_str(&esc(&rest[..p]));
        out.push_str(&if open == "**" {
            b(&inner[..end])
        } else {
            i(&inner[..end])
        });
        rest = &inner[end + close.len()..];
    }
    out.push_str(&esc(rest));
    out
}

/// A tagged paragraph: the tag (already roff) and its text.
fn item(page: &mut String, tag: &str, text: &str) {
    let _ = writeln!(page, ".TP\n{tag}\n{}", spans(text));
}

/// The page, `rxmigrate-save-helper.1`.
pub fn render() -> String {
    let releases = XEN_RELEASES.join(", ");
    let first = XEN_RELEASES.first().copied().unwrap_or("4.17");
    let mut p = String::new();
    let _ = writeln!(
        p,
        ".TH RXMIGRATE\\-SAVE\\-HELPER 1 \"\" \"rxmigrate {}\" \"rxmigrate\"",
        esc(VERSION)
    );
    p.push_str(".SH NAME\n");
    p.push_str(
        "rxmigrate\\-save\\-helper \\- rxmigrate's engine in place of libxl's save helper\n",
    );

    p.push_str(".SH SYNOPSIS\n");
    let synopses: [(&str, &[&str]); 4] = [
        ("\\-\\-save\\-domain", &SAVE_ARGS),
        ("\\-\\-restore\\-domain", &RESTORE_ARGS),
        ("\\-\\-check\\-config", &["[file]"]),
        ("\\-\\-version", &[]),
    ];
    for (n, (mode, args)) in synopses.iter().enumerate() {
        if n > 0 {
            p.push_str(".br\n");
        }
        let args: Vec<String> = args
            .iter()
            .map(
                |a| match a.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
                    Some(inner) => format!("[{}]", i(inner)),
                    None => i(a),
                },
            )
            .collect();
        let _ = writeln!(
            p,
            "\\fBrxmigrate\\-save\\-helper\\fR \\fB{mode}\\fR {}",
            args.join(" ")
        );
    }

    p.push_str(".SH DESCRIPTION\n");
    para(
        &mut p,
        "libxl does not move guest memory itself: for the memory part of every **xl save**, \
         **xl restore**, both ends of **xl migrate**, and the same operations of libvirt's libxl \
         driver (**virsh save**, **virsh restore**, **virsh migrate**), it runs a separate \
         program, Xen's **libxl-save-helper**, and talks to it over two pipes. \
         **rxmigrate-save-helper** takes that program's place: the same command line, the same \
         messages to libxl, the same Xen migration stream on the same file descriptor, with \
         rxmigrate's engine and its hot-page pre-copy behind them. Everything else (xl, libxl, \
         libvirt, QEMU, the save-file format, the migration handshake) stays Xen's.",
    );
    para(
        &mut p,
        &format!(
            "It is not run by hand. The package **rxmigrate-xl-plugin** installs it as \
             /usr/lib/rxmigrate/rxmigrate-save-helper and, for each installed Xen release \
             it drives ({releases}), moves Xen's helper aside with a dpkg diversion \
             (/usr/lib/xen-{{{{release}}}}/bin/libxl-save-helper.stock) and puts a link to it at \
             the path libxl runs. Removing the package gives Xen's helper back. For one \
             command without installing, set **LIBXL_SAVE_HELPER** to its path in xl's \
             environment."
        ),
    );
    para(
        &mut p,
        "Streams rxmigrate does not implement are not failed: Remus and COLO checkpointed \
         streams ({{stream_type}} 1 and 2) and the verification pass of **xl migrate --debug** \
         are handed to Xen's helper, executed in its place with the unchanged command line and \
         file descriptors, after a log line saying why.",
    );
    para(
        &mut p,
        "Its log goes to libxl as log messages, so it appears in xl's output and in libvirt's \
         libxl log (/var/log/libvirt/libxl/libxl-driver.log); libvirt gives libxl its own log \
         level, so the info lines are there only when libvirtd's log_level is 2 or lower. The \
         first line names the version, the git commit and the Xen releases; at the end of a \
         save a summary line gives the rounds, the pages sent and the downtime.",
    );

    p.push_str(".SH OPTIONS\n");
    item(
        &mut p,
        &format!(
            "\\fB\\-\\-save\\-domain\\fR {}",
            [
                "io_fd",
                "recv_fd",
                "domid",
                "xcflags",
                "cbflags",
                "stream_type"
            ]
            .map(i)
            .join(" ")
        ),
        "Save domain {{domid}} to the stream on {{io_fd}} (live when {{xcflags}} has bit 0), with \
         the callbacks libxl offers in {{cbflags}}. Given by libxl (Xen 4.14 and later).",
    );
    item(
        &mut p,
        &format!(
            "\\fB\\-\\-restore\\-domain\\fR {} ...",
            ["io_fd", "send_back_fd", "domid"].map(i).join(" ")
        ),
        "Restore the stream on {{io_fd}} into the domain libxl built, {{domid}}, and report the \
         store and console frames back to libxl. Given by libxl (Xen 4.14 and later).",
    );
    item(
        &mut p,
        &format!("\\fB\\-\\-check\\-config\\fR [{}]", i("file")),
        "Read the settings {{file}} (default /etc/rxmigrate.conf) as a run under xl would, \
         without the environment, and say whether it is valid, or the error and its line. \
         **rxmigrate doctor** runs this.",
    );
    item(
        &mut p,
        "\\fB\\-\\-version\\fR",
        "Print the version, the git commit and the Xen releases this build drives.",
    );

    p.push_str(".SH SETTINGS\n");
    para(
        &mut p,
        "/etc/rxmigrate.conf holds {{key}} = {{value}} lines; # starts a comment. Each key's \
         environment variable, set in xl's environment, wins over the file for that command \
         (for example RXMIGRATE_POLICY=xen4 xl migrate ...). A bad value fails the operation \
         with an error naming the file and line, or the variable.",
    );
    for s in HELPER_SETTINGS {
        item(
            &mut p,
            &format!("{} ({}; default: {})", b(s.key), esc(s.env), esc(s.default)),
            s.meaning,
        );
    }

    p.push_str(".SH ENVIRONMENT\n");
    item(
        &mut p,
        &b("RXMIGRATE_CONF"),
        "Read this settings file instead of /etc/rxmigrate.conf (it must exist); /dev/null for none.",
    );
    item(
        &mut p,
        &b("RXMIGRATE_LOG"),
        "What to log (env_logger's filter syntax; **RUST_LOG** if unset), default info.",
    );
    item(
        &mut p,
        &b("RXMIGRATE_<KEY>"),
        "A setting for this run (see SETTINGS).",
    );

    p.push_str(".SH FILES\n");
    item(
        &mut p,
        "/usr/lib/rxmigrate/rxmigrate\\-save\\-helper",
        "The helper, as the package installs it.",
    );
    item(
        &mut p,
        &format!("/usr/lib/xen\\-{}/bin/libxl\\-save\\-helper", i("release")),
        &format!(
            "The path libxl runs (for example /usr/lib/xen-{first}/bin): a link to the helper \
             while the package is installed."
        ),
    );
    item(
        &mut p,
        &format!(
            "/usr/lib/xen\\-{}/bin/libxl\\-save\\-helper.stock",
            i("release")
        ),
        "Xen's own helper, diverted, for the streams handed over.",
    );
    item(
        &mut p,
        "/etc/rxmigrate.conf",
        "The settings. The helper runs as root and reads it only if it is a regular file owned \
         by root that group and others cannot write, in directories likewise; otherwise the \
         operation fails, naming the file and why. The same holds for Xen's helper before it \
         is executed.",
    );

    p.push_str(".SH EXIT STATUS\n");
    para(
        &mut p,
        "As with Xen's helper, a save or restore reports its result to libxl in its last \
         message and exits 0 either way; xl prints the error. A bad command line exits 2. \
         **--check-config** exits 0 for a valid file and 1 otherwise.",
    );

    p.push_str(".SH SEE ALSO\n");
    p.push_str(
        "\\fBrxmigrate\\fR(1), \\fBrxmigrate\\-doctor\\fR(1), \\fBxl\\fR(1), \\fBvirsh\\fR(1), \
         \\fBdpkg\\-divert\\fR(1)\n",
    );
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_hyphens_backslashes_and_leading_dots() {
        assert_eq!(esc("a-b\\c"), "a\\-b\\ec");
        assert_eq!(esc(".x"), "\\&.x");
        assert_eq!(
            spans("run **xl save** on {{domid}} now"),
            "run \\fBxl save\\fR on \\fIdomid\\fR now"
        );
        // an unmatched marker is text
        assert_eq!(spans("a ** b"), "a ** b");
    }

    #[test]
    fn page_has_every_setting_and_no_markup_left() {
        let page = render();
        for s in HELPER_SETTINGS {
            assert!(page.contains(&b(s.key)), "{} missing", s.key);
            assert!(page.contains(&esc(s.env)), "{} missing", s.env);
        }
        for line in page.lines() {
            assert!(!line.contains("**"), "unconverted bold: {line}");
            // neither an unconverted italic span nor a brace pair format! ate
            assert!(!line.contains(['{', '}']), "brace left: {line}");
            assert!(!line.starts_with('\''), "line starts with a quote: {line}");
        }
    }
}
