# The Debian packages a lab machine gets on its transfer disk: ours (the
# .debs of ci/package) and libvirt's (fetched at run time). Shared by
# ci/lab/run and ci/lab/pair (sourced). Kept out of lib.sh on purpose, as
# boot.sh is: lib.sh is part of the image's hash (lab_key), and these
# packages are not part of the image.

# ci/package's .debs of the binaries just built, into REPO/target/debian.
lab_build_debs() {
    lab_log "building the Debian packages (ci/package)"
    (cd "$REPO" && nice cargo build --features docgen --bin rxmigrate-docgen --quiet)
    "$REPO/ci/package" --no-build --no-lintian
}

# lab_xfer_debs BIN [LIBVIRT_DEBS]: into a transfer disk's BIN, our .debs
# (BIN/debs, when ci/package made them) and the libvirt packages of
# fetch_libvirt_debs (BIN/libvirt-debs, when that directory exists).
lab_xfer_debs() {
    local bin=$1 libvirt=${2:-}
    if ls "$REPO"/target/debian/*.deb >/dev/null 2>&1; then
        mkdir -p "$bin/debs"
        cp "$REPO"/target/debian/*.deb "$bin/debs/"
    fi
    if [ -n "$libvirt" ] && [ -d "$libvirt" ]; then
        cp -r "$libvirt" "$bin/libvirt-debs"
    fi
    return 0
}

# --- libvirt's packages, for the libvirt scenarios only ------------------------
# The dom0 image has no libvirt (CI builds the image from scratch, and none
# of its scenarios needs it). What the image lacks of libvirt's libxl
# driver, daemon and virsh is worked out by this host's apt against the
# image's own dpkg status (read out of dom0.img with debugfs, no mount),
# downloaded into the run's work directory and carried on the transfer
# disk; the scenario installs what dom0 does not have with dpkg -i (dom0
# has no network). Only when this host runs dom0's Debian release (its apt
# knows those packages): bookworm's 4.17 lab on a bookworm host. Any
# failure is written into DEST/NOT-FETCHED, which the scenario reports as
# "not available".
LIBVIRT_PKGS="libvirt-daemon-driver-xen libvirt-daemon libvirt-clients"
libvirt_plan() { # STATUS LOG: the packages apt would install in dom0, as NAME=VERSION
    # shellcheck disable=SC2086 # a list of names
    apt-get -s -q -o Dir::State::status="$1" -o Debug::NoLocking=1 \
        install --no-install-recommends $LIBVIRT_PKGS >"$2" 2>&1 || return 1
    awk '$1 == "Inst" { v = $3; if (v ~ /^\[/) v = $4; sub(/^\(/, "", v); print $2 "=" v }' "$2"
}
libvirt_download() { # DEST STATUS LOGDIR: the planned packages into DEST
    local pkgs
    pkgs=$(libvirt_plan "$2" "$3/plan.log") && [ -n "$pkgs" ] || return 1
    rm -f "$1"/*.deb
    # shellcheck disable=SC2086 # a list of NAME=VERSION
    (cd "$1" && apt-get download -q $pkgs) >"$3/download.log" 2>&1
}
# fetch_libvirt_debs DEST IMG SUITE XEN: libvirt's packages for the dom0 of
# lab image IMG (Debian SUITE, Xen release XEN) into DEST, or the reason
# they are not there in DEST/NOT-FETCHED.
fetch_libvirt_debs() {
    local dest=$1 img=$2 suite=$3 xen=$4 st=$1.apt host_suite why=""
    rm -rf "$dest" "$st"
    mkdir -p "$dest" "$st"
    # apt-get download runs as _apt, which needs to write into the directory
    chmod 777 "$dest"
    host_suite=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
    if [ "$host_suite" != "$suite" ]; then
        why="libvirt packages for $suite (Xen $xen) are not fetched: the lab takes them from this host's apt, which is ${host_suite:-unknown}'s"
    elif ! debugfs -R "cat /var/lib/dpkg/status" "$img/dom0.img" >"$st/status" 2>"$st/debugfs.log" ||
        ! grep -q '^Package: ' "$st/status"; then
        why="could not read dom0's dpkg status out of $img/dom0.img (debugfs: $(tail -1 "$st/debugfs.log"))"
    elif ! libvirt_download "$dest" "$st/status" "$st"; then
        # stale lists (a version gone from the mirror): once more after an update
        lab_log "fetching libvirt's packages failed; apt-get update and again"
        apt-get update -qq >"$st/update.log" 2>&1 || true
        libvirt_download "$dest" "$st/status" "$st" ||
            why="apt could not fetch $LIBVIRT_PKGS for dom0: $(grep -a -m1 -E '^(E:|W:)' "$st/plan.log" "$st/download.log" 2>/dev/null | cut -c1-200)"
    fi
    if [ -n "$why" ]; then
        lab_log "libvirt scenarios on Xen $xen will be \"not available\": $why"
        rm -f "$dest"/*.deb
        echo "$why" >"$dest/NOT-FETCHED"
        return 0
    fi
    lab_log "libvirt's packages for the Xen $xen dom0: $(find "$dest" -name '*.deb' | wc -l) .debs, $(du -sh "$dest" | cut -f1) (what the image lacks of $LIBVIRT_PKGS)"
}
