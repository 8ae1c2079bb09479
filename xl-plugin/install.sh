#!/bin/sh
# Install or remove rxmigrate-save-helper as the save helper of xl (libxl)
# on a Debian Xen host, so that plain `xl save`, `xl restore` and both ends
# of `xl migrate` (and xendomains) use it.
#
# How: Xen's helper (/usr/lib/xen-*/bin/libxl-save-helper) is moved aside
# with a local dpkg diversion to libxl-save-helper.stock, and a symlink to
# our helper takes its place. libxl runs that path whatever environment xl
# has (ssh, systemd, sudo), package upgrades put Xen's new helper under the
# diverted name, and rxmigrate-save-helper execs the .stock one for streams
# it leaves to Xen. `uninstall` removes the link and the diversion, which
# puts Xen's helper back.
#
# Usage: install.sh [install|uninstall|status] [--binary PATH] [--root DIR]
#   --binary PATH  the helper to install (default: beside this script, or
#                  ../target/release/rxmigrate-save-helper)
#   --root DIR     operate on a system image in DIR (tests, chroots)
set -eu

prog=$(basename "$0")
die() { echo "$prog: $*" >&2; exit 1; }

action=install
binary=
root=
while [ $# -gt 0 ]; do
    case $1 in
        install|uninstall|status) action=$1 ;;
        --binary) [ $# -ge 2 ] || die "--binary needs a path"; binary=$2; shift ;;
        --root) [ $# -ge 2 ] || die "--root needs a directory"; root=${2%/}; shift ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (try --help)" ;;
    esac
    shift
done

libdir=/usr/local/lib/rxmigrate
helper=$libdir/rxmigrate-save-helper
conf=/etc/rxmigrate.conf
conf_copy=$libdir/rxmigrate.conf.installed
stock_name=libxl-save-helper.stock

command -v dpkg-divert >/dev/null || die "dpkg-divert not found: this installer is for Debian-based Xen hosts"
if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
    die "must run as root (it changes /usr/lib/xen-*/bin)"
fi
divert() { if [ -n "$root" ]; then dpkg-divert --root "$root" "$@"; else dpkg-divert "$@"; fi; }

# The helper directories: where Xen's libxl-save-helper is, or was before we
# diverted it.
helper_dirs() {
    for f in "$root"/usr/lib/xen-*/bin/libxl-save-helper "$root"/usr/lib/xen-*/bin/$stock_name; do
        [ -e "$f" ] || [ -L "$f" ] || continue
        d=$(dirname "$f")
        echo "${d#"$root"}"
    done | sort -u
}

is_ours() { # is $root$1 our symlink?
    [ -L "$root$1" ] && [ "$(readlink "$root$1")" = "$helper" ]
}

diverted() { # is $1 diverted to its .stock name?
    [ "$(divert --truename "$1")" = "$(dirname "$1")/$stock_name" ]
}

write_conf() {
    cat <<'EOF'
# rxmigrate-save-helper settings (see the xl-plugin README). Environment
# variables RXMIGRATE_<KEY> (upper case) override these for one xl command.
#
# Pre-copy policy: hotpage (hot pages only in the final round), xen4 (stock
# Xen), xen33 (Xen 3.3).
policy = hotpage
# max_rounds = 5
# target_dirty = 50
# max_factor = 3
# hot_threshold = 2
# hot_release = yes
# Append per-round statistics as JSON lines:
# stats = /var/log/rxmigrate-stats.jsonl
# Without a usable hypervisor backend: hand over to Xen's helper (stock) or fail.
# fallback = stock
EOF
}

do_install() {
    if [ -z "$binary" ]; then
        here=$(cd "$(dirname "$0")" && pwd)
        for c in "$here/rxmigrate-save-helper" "$here/../target/release/rxmigrate-save-helper"; do
            if [ -x "$c" ]; then binary=$c; break; fi
        done
        [ -n "$binary" ] || die "no rxmigrate-save-helper binary found; build it (cargo build --release --workspace) or pass --binary PATH"
    fi
    [ -x "$binary" ] || die "$binary is not an executable file"
    dirs=$(helper_dirs)
    [ -n "$dirs" ] || die "no $root/usr/lib/xen-*/bin/libxl-save-helper: is xen-utils installed?"

    mkdir -p "$root$libdir"
    # Copy then rename, so that a running helper is never half-written.
    cp "$binary" "$root$helper.new"
    chmod 0755 "$root$helper.new"
    mv -f "$root$helper.new" "$root$helper"

    for d in $dirs; do
        f=$d/libxl-save-helper
        if ! diverted "$f"; then
            if [ -e "$root$f" ] && ! [ -L "$root$f" ] && [ -e "$root$d/$stock_name" ]; then
                die "$root$d/$stock_name exists but is not a diversion; remove it first"
            fi
            divert --local --rename --divert "$d/$stock_name" --add "$f" >/dev/null
        fi
        [ -e "$root$d/$stock_name" ] || die "Xen's helper did not end up at $root$d/$stock_name"
        ln -sfn "$helper" "$root$f.rxmigrate-new"
        mv -fT "$root$f.rxmigrate-new" "$root$f"
        echo "$prog: $f -> $helper (Xen's helper kept as $d/$stock_name)"
    done

    if [ ! -e "$root$conf" ]; then
        write_conf > "$root$conf"
        # The helper reads it only if no one but root can write it.
        chmod 0644 "$root$conf"
        cp "$root$conf" "$root$conf_copy"
        echo "$prog: wrote $conf"
    else
        echo "$prog: kept the existing $conf"
    fi
    echo "$prog: installed; plain xl save/restore/migrate now use rxmigrate on this host (install it on the other end too)"
}

do_uninstall() {
    for d in $(helper_dirs); do
        f=$d/libxl-save-helper
        if is_ours "$f"; then
            rm -f "$root$f"
        elif [ -e "$root$f" ] && diverted "$f"; then
            die "$root$f is not our symlink; leaving the diversion alone"
        fi
        if diverted "$f"; then
            divert --local --rename --remove "$f" >/dev/null
            echo "$prog: restored Xen's $f"
        fi
    done
    if [ -e "$root$conf" ] && [ -e "$root$conf_copy" ]; then
        if cmp -s "$root$conf" "$root$conf_copy"; then
            rm -f "$root$conf"
            echo "$prog: removed $conf"
        else
            echo "$prog: kept $conf (changed since install)"
        fi
    fi
    rm -rf "$root$libdir"
    echo "$prog: uninstalled"
}

do_status() {
    dirs=$(helper_dirs)
    [ -n "$dirs" ] || { echo "no Xen save helper found"; exit 1; }
    rc=1
    for d in $dirs; do
        f=$d/libxl-save-helper
        if is_ours "$f" && diverted "$f"; then
            echo "$f: rxmigrate ($helper), Xen's helper at $d/$stock_name"
            rc=0
        else
            echo "$f: Xen's own helper"
        fi
    done
    exit $rc
}

case $action in
    install) do_install ;;
    uninstall) do_uninstall ;;
    status) do_status ;;
esac
