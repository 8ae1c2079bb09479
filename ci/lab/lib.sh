# Shared by ci/lab/build and ci/lab/run (sourced, not executed).
#
# The lab image is cached outside the repository, in a directory named after
# a hash of everything that goes into it (this file, build, dom0/, guest/):
# changing any of them makes `build` produce a new image, while scenario and
# runner changes (run, scenarios/) need no rebuild.

# shellcheck disable=SC2034 # used by build and run
LAB_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB_CACHE=${RXMIGRATE_LAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rxmigrate-lab}

# Debian mirror, and per Xen release of the lab (LAB_XEN, `--xen` of build
# and run; default 4.17) the Debian suite of dom0 and its hypervisor.
#  4.17: bookworm. Debian's current 4.17 hypervisor (bookworm-security) is
#        built without shadow paging, so PV guests cannot enable log-dirty
#        ("Failed to enable logdirty: 95"); the bookworm (main) build pinned
#        below still has it and works with the newer tools.
#  4.20: trixie, its own hypervisor as the suite has it (4.20.4 and later are
#        built without shadow paging since XSA-495: no PV live migration, for
#        stock xl too; docs/LAB.md).
LAB_MIRROR=${LAB_MIRROR:-http://deb.debian.org/debian}
LAB_XEN=${LAB_XEN:-4.17}
LAB_XENS="4.17 4.20"
# Sets LAB_SUITE and LAB_XEN_PIN (empty: the suite's own hypervisor package,
# installed into dom0's tree) for release $1.
lab_select_xen() {
    case $1 in
        4.17) LAB_SUITE=bookworm LAB_XEN_PIN=4.17.5+72-g01140da4e8-1 ;;
        4.20) LAB_SUITE=trixie LAB_XEN_PIN= ;;
        *) lab_die "no lab for Xen $1 (the lab has: $LAB_XENS)" ;;
    esac
    LAB_XEN=$1
}

lab_log() { printf '[lab %s] %s\n' "$(date +%T)" "$*" >&2; }
lab_die() { lab_log "error: $*"; exit 1; }

# Hash of the files that make up the image and its Xen release (16 hex digits).
lab_key() {
    { echo "xen $LAB_XEN"; (cd "$LAB_SRC" && find lib.sh build dom0 guest -type f -print0 |
        LC_ALL=C sort -z | xargs -0 sha256sum); } | sha256sum | cut -c1-16
}

# lab-RELEASE-HASH: one image per Xen release of the lab, side by side.
lab_image_dir() { echo "$LAB_CACHE/lab-$LAB_XEN-$(lab_key)"; }
