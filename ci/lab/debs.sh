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
# driver, daemon and virsh is worked out by apt on this host against the
# image's own dpkg status (read out of dom0.img with debugfs, no mount) and
# the sources the image was built from, downloaded into the run's work
# directory and carried on the transfer disk; the scenario installs what
# dom0 does not have by `apt-get install FILE...` (dom0 has no network).
# apt runs with a configuration of its own (lab_apt), so any host can fetch for either
# lab's Debian release (bookworm for 4.17, trixie for 4.20), and this
# host's apt sources, lists and cache are never touched. Any failure is
# written into DEST/NOT-FETCHED, which the scenario reports as "not
# available".
LIBVIRT_PKGS="libvirt-daemon-driver-xen libvirt-daemon libvirt-clients"
LAB_APT_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# lab_apt_init DIR SUITE STATUS: LAB_APT, apt's options for Debian SUITE as
# ci/lab/build's dom0 has it (LAB_MIRROR's SUITE, SUITE-updates and
# SUITE-security, main, signed by Debian's archive keys), its lists and
# cache under DIR, dpkg's status STATUS (the image's). The host's apt.conf.d
# still applies (a proxy, say); its sources, lists and cache do not.
lab_apt_init() {
    local dir=$1 suite=$2 status=$3 k=$LAB_APT_KEYRING
    mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/sources.list.d"
    printf "deb [signed-by=$k] %s\n" "$LAB_MIRROR $suite main" "$LAB_MIRROR $suite-updates main" \
        "${LAB_MIRROR%/debian}/debian-security $suite-security main" >"$dir/sources.list"
    LAB_APT=(-o "Dir::Etc::SourceList=$dir/sources.list" -o "Dir::Etc::SourceParts=$dir/sources.list.d"
        -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache" -o "Dir::State::status=$status"
        -o Debug::NoLocking=1)
}
libvirt_plan() { # LOG: the packages apt would install in dom0, as NAME=VERSION
    # shellcheck disable=SC2086 # a list of names
    apt-get "${LAB_APT[@]}" -s -q install --no-install-recommends $LIBVIRT_PKGS >"$1" 2>&1 || return 1
    awk '$1 == "Inst" { v = $3; if (v ~ /^\[/) v = $4; sub(/^\(/, "", v); print $2 "=" v }' "$1"
}
# fetch_libvirt_debs DEST IMG SUITE XEN: libvirt's packages for the dom0 of
# lab image IMG (Debian SUITE, Xen release XEN) into DEST, or the reason
# they are not there in DEST/NOT-FETCHED.
fetch_libvirt_debs() {
    local dest=$1 img=$2 suite=$3 xen=$4 st=$1.apt pkgs why=""
    rm -rf "$dest" "$st"
    mkdir -p "$dest" "$st"
    # apt-get download runs as _apt, which needs to write into the directory
    chmod 777 "$dest"
    lab_apt_init "$st" "$suite" "$st/status"
    if [ ! -f "$LAB_APT_KEYRING" ]; then
        why="no $LAB_APT_KEYRING on this host (package debian-archive-keyring) to check $suite's packages"
    elif ! debugfs -R "cat /var/lib/dpkg/status" "$img/dom0.img" >"$st/status" 2>"$st/debugfs.log" ||
        ! grep -q '^Package: ' "$st/status"; then
        why="could not read dom0's dpkg status out of $img/dom0.img (debugfs: $(tail -1 "$st/debugfs.log"))"
    elif ! apt-get "${LAB_APT[@]}" -q update >"$st/update.log" 2>&1; then
        why="apt-get update for $suite failed: $(grep -a -m1 -E '^(E:|W:|Err)' "$st/update.log" | cut -c1-200)"
    elif ! pkgs=$(libvirt_plan "$st/plan.log") || [ -z "$pkgs" ]; then
        why="apt found no way to install $LIBVIRT_PKGS in dom0: $(grep -a -m1 -E '^(E:|W:)' "$st/plan.log" | cut -c1-200)"
    # shellcheck disable=SC2086 # a list of NAME=VERSION
    elif ! (cd "$dest" && apt-get "${LAB_APT[@]}" -q download $pkgs) >"$st/download.log" 2>&1; then
        why="apt could not download $LIBVIRT_PKGS for dom0: $(grep -a -m1 -E '^(E:|W:|Err)' "$st/download.log" | cut -c1-200)"
    fi
    if [ -n "$why" ]; then
        lab_log "libvirt scenarios on Xen $xen will be \"not available\": $why"
        rm -f "$dest"/*.deb
        echo "$why" >"$dest/NOT-FETCHED"
        return 0
    fi
    lab_log "libvirt's packages for the Xen $xen dom0 ($suite): $(find "$dest" -name '*.deb' | wc -l) .debs, $(du -sh "$dest" | cut -f1) (what the image lacks of $LIBVIRT_PKGS)"
}
