# Shared by ci/lab/build and ci/lab/run (sourced, not executed).
#
# The lab image is cached outside the repository, in a directory named after
# a hash of everything that goes into it (this file, build, dom0/, guest/):
# changing any of them makes `build` produce a new image, while scenario and
# runner changes (run, scenarios/) need no rebuild.

# shellcheck disable=SC2034 # used by build and run
LAB_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB_CACHE=${RXMIGRATE_LAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rxmigrate-lab}

# Debian mirror and the hypervisor pin. Debian's current 4.17 hypervisor
# (bookworm-security) is built without shadow paging, so PV guests cannot
# enable log-dirty ("Failed to enable logdirty: 95"); the bookworm (main)
# build below still has it and works with the newer tools.
LAB_MIRROR=${LAB_MIRROR:-http://deb.debian.org/debian}
LAB_SUITE=bookworm
LAB_XEN_PIN=4.17.5+72-g01140da4e8-1

lab_log() { printf '[lab %s] %s\n' "$(date +%T)" "$*" >&2; }
lab_die() { lab_log "error: $*"; exit 1; }

# Hash of the files that make up the image (16 hex digits).
lab_key() {
    (cd "$LAB_SRC" && find lib.sh build dom0 guest -type f -print0 | LC_ALL=C sort -z |
        xargs -0 sha256sum) | sha256sum | cut -c1-16
}

lab_image_dir() { echo "$LAB_CACHE/lab-$(lab_key)"; }
