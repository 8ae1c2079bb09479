#!/bin/sh
# Runs Xen's own stream verifier (verify-stream-v2, from Debian's
# xen-utils-4.17 package) on a file.
#
#   ci/xen-verify.sh FILE [libxc|libxl|xl]
#
# Without a format, it is recognised from the file's first bytes. The package
# is downloaded once with apt-get and unpacked (not installed) into
# ${RXMIGRATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rxmigrate}/xen-utils.
# Exit status is the verifier's: 0 good stream, 1 stream error, 2 script error.
set -eu

usage() { echo "usage: $0 FILE [libxc|libxl|xl]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
file=$1
[ -r "$file" ] || { echo "$0: cannot read $file" >&2; exit 2; }

if [ $# -eq 2 ]; then
    fmt=$2
else
    head=$(head -c 8 "$file" | od -An -tx1 | tr -d ' \n')
    case $head in
        58656e2073617665) fmt=xl ;;      # "Xen save"
        4c6962786c466d74) fmt=libxl ;;   # "LibxlFmt"
        ffffffffffffffff) fmt=libxc ;;
        *) echo "$0: $file: not an xl, libxl or libxc stream" >&2; exit 2 ;;
    esac
fi
case $fmt in libxc|libxl|xl) ;; *) usage ;; esac

cache=${RXMIGRATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rxmigrate}/xen-utils
libdir=$cache/usr/lib/xen-4.17
verifier=$libdir/bin/verify-stream-v2

if [ ! -f "$verifier" ]; then
    command -v apt-get >/dev/null || { echo "$0: needs apt-get to fetch xen-utils-4.17" >&2; exit 2; }
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # apt-get download writes into the current directory; _apt may not be
    # able to write there, which only costs a warning.
    (cd "$tmp" && apt-get download -q xen-utils-4.17 >&2) || {
        echo "$0: apt-get download xen-utils-4.17 failed (try apt-get update)" >&2; exit 2; }
    # Unpack beside the cache and rename it into place: several verifiers
    # may run at once (parallel tests), and the first rename wins.
    mkdir -p "$(dirname "$cache")"
    new=$(mktemp -d "$cache.new.XXXXXX")
    dpkg-deb -x "$tmp"/xen-utils-4.17_*.deb "$new"
    [ -f "$new/usr/lib/xen-4.17/bin/verify-stream-v2" ] || {
        echo "$0: the package has no verify-stream-v2" >&2; rm -rf "$new"; exit 2; }
    [ -f "$verifier" ] || rm -rf "$cache"
    mv -T "$new" "$cache" 2>/dev/null || rm -rf "$new"
fi

PYTHONPATH=$libdir/lib/python exec python3 "$verifier" -f "$fmt" -i "$file"
