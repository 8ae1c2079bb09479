#!/bin/bash
# The network side of the two-machine lab (ci/lab/pair), in dom0; started
# by run.sh on the transfer disk instead of main.sh.
#
#   peer.sh receiver        machine B: the link up, sshd, "LAB-PEER ready" on
#                           the console; then waits until the sender says
#                           finish (ssh B touch /run/lab-peer-finish) or
#                           LAB_PEER_WAIT seconds pass; keeps its logs in OUT
#   peer.sh sender SCEN...  machine A: the link up, waits for B's sshd, runs
#                           main.sh SCEN..., then tells B to finish
#
# Environment (run.sh): OUT, LAB_PEER_SELF (this machine's address),
# LAB_PEER_ADDR (the other's), LAB_PEER_WAIT; /mnt/xfer/peer holds what the
# host read out of the other machine's image: authorized_keys (B: the
# sender's root key) and known_hosts (A: B's host keys under its address).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
SCEN_DIR=$(cd "$(dirname "$0")" && pwd)
PEER_IN=/mnt/xfer/peer
FINISH=/run/lab-peer-finish
role=$1
shift
mkdir -p "$OUT"
up() { cut -d' ' -f1 /proc/uptime; }

# The private link: virtio-net, the only interface besides lo (no udev in
# this dom0, so the kernel's name stands).
link_up() {
    local i dev=""
    modprobe -q virtio_net
    for ((i = 0; i < 40; i++)); do
        dev=$(ls /sys/class/net | grep -vx lo | head -1)
        [ -n "$dev" ] && break
        sleep 0.5
    done
    if [ -z "$dev" ]; then
        echo "LAB-PEER error: no network interface (virtio_net)"
        return 1
    fi
    ip link set "$dev" up && ip addr add "$LAB_PEER_SELF/24" dev "$dev" || return 1
    echo "LAB-PEER link $dev $LAB_PEER_SELF at $(up)s"
}

case $role in
    receiver)
        link_up || exit 1
        [ -s "$PEER_IN/authorized_keys" ] && cat "$PEER_IN/authorized_keys" >>/root/.ssh/authorized_keys
        mkdir -p /run/sshd
        /usr/sbin/sshd -E "$OUT/sshd.log" || { echo "LAB-PEER error: sshd did not start"; exit 1; }
        xl info >"$OUT/dom0-facts.txt" 2>&1
        echo "LAB-FACTS $(xl info | awk -F' *: ' '/^(xen_version|virt_caps|nr_cpus) / { gsub(" ", ",", $2); printf "%s=%s ", $1, $2 }')"
        echo "LAB-PEER ready at $(up)s"
        t=$SECONDS
        while [ ! -e "$FINISH" ] && [ $((SECONDS - t)) -lt "${LAB_PEER_WAIT:-3600}" ]; do sleep 2; done
        if [ -e "$FINISH" ]; then
            echo "LAB-PEER finish from the sender after $((SECONDS - t))s"
        else
            echo "LAB-PEER no word from the sender in ${LAB_PEER_WAIT}s: giving up"
        fi
        xl list >"$OUT/xl-list.txt" 2>&1
        xl dmesg >"$OUT/xen-dmesg.txt" 2>&1
        mkdir -p "$OUT/consoles"
        cp /var/log/xen/console/*.log* "$OUT/consoles/" 2>/dev/null
        cp /var/log/xen/*.log "$OUT/" 2>/dev/null
        echo "LAB-DONE"
        ;;
    sender)
        [ -s "$PEER_IN/known_hosts" ] && cat "$PEER_IN/known_hosts" >>/root/.ssh/known_hosts
        # One ssh connection to B, shared by every later ssh (the scenarios'
        # checks, xl migrate's): a new login costs 20-30 s of key exchange
        # in two emulated dom0s on a busy host.
        printf 'Host %s\n    ControlMaster auto\n    ControlPath /run/ssh-peer-%%C\n    ControlPersist 3600\n' \
            "$LAB_PEER_ADDR" >>/root/.ssh/config
        link_up || exit 1
        t=$SECONDS
        until ssh -o ConnectTimeout=5 "$LAB_PEER_ADDR" true 2>"$OUT/peer-ssh.log"; do
            if [ $((SECONDS - t)) -ge "${LAB_PEER_WAIT:-3600}" ]; then
                echo "LAB-PEER error: no ssh to $LAB_PEER_ADDR in ${LAB_PEER_WAIT}s: $(tail -1 "$OUT/peer-ssh.log")"
                break
            fi
            sleep 5
        done
        echo "LAB-PEER peer $LAB_PEER_ADDR reachable after $((SECONDS - t))s"
        bash "$SCEN_DIR/main.sh" "$@"
        ssh -o ConnectTimeout=10 "$LAB_PEER_ADDR" touch "$FINISH" &&
            echo "LAB-PEER told $LAB_PEER_ADDR to finish"
        ;;
    *)
        echo "peer.sh: unknown role $role" >&2
        exit 2
        ;;
esac
