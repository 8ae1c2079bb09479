#!/bin/bash
# The receiver's half of cross-libvirt-TYPE (cross.sh), run on machine B of
# ci/lab/pair by the sender, through ssh:
#
#   libvirt-peer.sh setup SCENARIO     libvirt_setup (libvirt.sh) listening
#                                      on this machine's link address: the
#                                      packages, the lab's CPU model,
#                                      libvirtd, our .debs
#   libvirt-peer.sh cleanup SCENARIO   libvirt_cleanup: the guest, libvirtd,
#                                      our packages gone
#
# Environment (from the sender): OUT, BIN, LAB_MEMORY, LAB_WORKLOAD,
# LAB_PEER_SELF (this machine's address), LAB_GUEST_LOADER (an HVM guest's
# firmware on the sender). setup keeps its own record,
# OUT/SCENARIO.rec on this machine's transfer disk, ending in its result
# line (lib.sh's finish), which the sender reads and takes in.
action=$1 SCENARIO=$2
SCEN_DIR=$(cd "$(dirname "$0")" && pwd)
. "$SCEN_DIR/lib.sh"
TYPE=${SCENARIO##*-}
NAME=$TYPE-lab
. "$SCEN_DIR/installed.sh"
. "$SCEN_DIR/package.sh"
. "$SCEN_DIR/libvirt.sh"
case $action in
    setup)
        # shellcheck disable=SC2034 # read by finish (lib.sh)
        T_START=$(now)
        rec_reset
        libvirt_cleanup
        # this scenario's libxl logs only (the sender reads them whole)
        rm -f "$LIBXL_LOG" "$LIBVIRT_LOG_DIR/$NAME.log"
        libvirt_setup "$LAB_PEER_SELF" && conf_for receive
        # an HVM guest's firmware at the sender's path (the domain XML
        # comes from there): Debian puts it under /usr/lib/xen-RELEASE, so
        # between two releases it is our own at that path
        if [ -n "${LAB_GUEST_LOADER:-}" ] && [ ! -e "$LAB_GUEST_LOADER" ]; then
            mkdir -p "$(dirname "$LAB_GUEST_LOADER")"
            ln -s "$XEN_LIB/boot/hvmloader" "$LAB_GUEST_LOADER"
            rec meta "hvmloader_link=$LAB_GUEST_LOADER -> $XEN_LIB/boot/hvmloader"
        fi
        finish
        ;;
    cleanup) libvirt_cleanup ;;
    *)
        echo "libvirt-peer.sh: unknown action $action" >&2
        exit 2
        ;;
esac
