# Helpers for the lab scenarios; runs in dom0 (sourced by scenario.sh).
#
# Environment (set by run.sh): OUT (results directory), BIN (rxmigrate
# binaries), LAB_MEMORY (guest MiB), LAB_WORKLOAD (idle | dirty:HOT:SWEEP:RATE),
# LAB_BOOT_WAIT (seconds for a guest to show its first heartbeat).

PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
XEN_LIB=/usr/lib/xen-4.17
CONSOLE_DIR=/var/log/xen/console
SAVE_DIR=/var/lib/xenlab
mkdir -p "$SAVE_DIR"

now() { date +%s.%N; }
secs_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
say() { echo "[$(date +%T)] $SCENARIO: $*"; }

# --- the record of one scenario ------------------------------------------
# Lines of tab-separated key=value pairs; report.py turns them into JSON.
REC=$SAVE_DIR/$SCENARIO.rec
rec_reset() { : >"$REC"; }
rec() { local IFS=$'\t'; echo "$*" >>"$REC"; }
# first failure wins: it is the reason shown in the table
FAILED=""
fail() { [ -n "$FAILED" ] || FAILED=$*; say "FAIL: $*"; }
finish() {
    local status=pass reason=""
    [ -n "$FAILED" ] && status=fail reason=$FAILED
    [ -n "${NOT_AVAILABLE:-}" ] && status="not available" reason=$NOT_AVAILABLE
    rec "result" "status=$status" "reason=$reason" "total_s=$(secs_since "$T_START")"
    python3 "$SCEN_DIR/report.py" "$REC" >"$OUT/$SCENARIO.json"
    say "$status${reason:+: $reason}"
}
not_available() { NOT_AVAILABLE=$*; finish; exit 0; }

# Run and time one operation; its output goes to OUT/SCENARIO.OP.log.
# Usage: op NAME [key=value...] -- COMMAND...
op() {
    local name=$1 extra=() s rc secs
    shift
    while [ "$1" != -- ]; do extra+=("$1"); shift; done
    shift
    say "$name: $*"
    s=$(now)
    "$@" >"$OUT/$SCENARIO.$name.log" 2>&1
    rc=$?
    secs=$(secs_since "$s")
    rec step "op=$name" "rc=$rc" "secs=$secs" "${extra[@]}"
    if [ $rc != 0 ]; then
        sed 's/^/    | /' "$OUT/$SCENARIO.$name.log" | tail -15
        fail "$name exited $rc ($(grep -v '^\s*$' "$OUT/$SCENARIO.$name.log" | tail -1 | cut -c1-160))"
    else
        say "$name ok in ${secs}s"
    fi
    return $rc
}

# --- guests --------------------------------------------------------------
# Writes the xl config of a test guest: no disks, no network; the dom0's
# kernel with the lab initramfs; on_reboot/on_crash "preserve" so a crash
# leaves the domain (and its console) for the record instead of rebooting.
guest_config() {
    local name=$1 type=$2 cfg=$SAVE_DIR/$1.cfg work args
    IFS=: read -r work hot sweep rate <<<"$LAB_WORKLOAD"
    args="quiet lab.work=$work${hot:+ lab.hot=$hot}${sweep:+ lab.sweep=$sweep}${rate:+ lab.rate=$rate}"
    {
        echo "name = \"$name\""
        echo "type = \"$type\""
        echo "memory = $LAB_MEMORY"
        echo "vcpus = 1"
        echo 'on_poweroff = "destroy"'
        echo 'on_reboot = "preserve"'
        echo 'on_crash = "preserve"'
        echo 'kernel = "/root/guest/vmlinuz"'
        echo 'ramdisk = "/root/guest/initrd.gz"'
        if [ "$type" = hvm ]; then
            # xenconsoled does not log an HVM guest's serial port: QEMU writes it
            echo "cmdline = \"console=ttyS0 $args\""
            echo "serial = \"file:$CONSOLE_DIR/guest-$name-serial.log\""
            echo 'vga = "none"'
            echo 'nographic = 1'
            echo 'device_model_version = "qemu-xen"'
        else
            echo "extra = \"console=hvc0 $args\""
        fi
    } >"$cfg"
    echo "$cfg"
}

# Every console log of guest NAME: xenconsoled's (also under the temporary
# names of a migration, NAME--incoming), the HVM serial file, and copies of
# the serial file kept before operations that start a new device model
# (QEMU truncates the file when it opens it).
guest_logs() { ls "$CONSOLE_DIR"/guest-"$1".log "$CONSOLE_DIR"/guest-"$1"--*.log "$CONSOLE_DIR"/guest-"$1"-serial.log* 2>/dev/null; }
keep_serial() {
    local f=$CONSOLE_DIR/guest-$1-serial.log
    [ -f "$f" ] && cp "$f" "$f.$(date +%s%N)"
    return 0
}
heartbeat() {
    guest_logs "$1" | xargs -r cat | tr -d '\r' | grep -a -o 'HEARTBEAT [0-9]*' |
        awk '$2 > m { m = $2 } END { if (NR) print m }'
}
# Distinct kernel boots seen on the guest's consoles.
boots() { guest_logs "$1" | xargs -r cat | grep -a -o 'GUEST-UP boot=[0-9a-f-]*' | sort -u | wc -l; }
# Longest work-loop stall in the heartbeats numbered above $2 (the guest's view
# of how long it was stopped, in ms).
stall_after() {
    guest_logs "$1" | xargs -r cat | tr -d '\r' | grep -a -o 'HEARTBEAT [0-9]* gap_ms=[0-9]*' |
        awk -v from="$2" '{ n = $2 + 0; g = substr($3, 8) + 0 } n > from + 0 && g > m { m = g } END { print m + 0 }'
}
domain_exists() { xl domid "$1" >/dev/null 2>&1; }

# Create guest NAME of TYPE and wait for its first heartbeat.
guest_create() {
    local name=$1 type=$2 cfg i s
    xl destroy "$name" >/dev/null 2>&1
    rm -f "$CONSOLE_DIR"/guest-"$name"*.log*
    cfg=$(guest_config "$name" "$type")
    s=$(now)
    op create -- xl create "$cfg" || return 1
    for ((i = 0; i < LAB_BOOT_WAIT; i++)); do
        [ -n "$(heartbeat "$name")" ] && break
        domain_exists "$name" || break
        sleep 1
    done
    if [ -z "$(heartbeat "$name")" ]; then
        rec step "op=boot" "rc=1" "secs=$(secs_since "$s")"
        guest_logs "$name" | xargs -r tail -n 5 | sed 's/^/    | /'
        fail "guest $name showed no heartbeat within ${LAB_BOOT_WAIT}s of xl create"
        return 1
    fi
    rec step "op=boot" "rc=0" "secs=$(secs_since "$s")" "heartbeat=$(heartbeat "$name")"
    say "guest $name up, heartbeat $(heartbeat "$name")"
}

# Liveness after an operation: the domain exists, its heartbeat moves past
# HB0 (the value before the operation: the counter lives in guest memory, so
# it carries on across save/restore), and it booted exactly once.
check_alive() {
    local name=$1 hb0=$2 what=$3 i hb b ok=yes why=""
    for ((i = 0; i < 90; i++)); do
        hb=$(heartbeat "$name")
        [ "${hb:-0}" -gt "${hb0:-0}" ] && break
        sleep 1
    done
    b=$(boots "$name")
    if ! domain_exists "$name"; then
        ok=no why="domain $name is gone"
    elif [ "${hb:-0}" -le "${hb0:-0}" ]; then
        ok=no why="heartbeat stuck at ${hb:-none} for 90s"
    elif [ "$b" != 1 ]; then
        ok=no why="guest booted $b times (a silent reboot)"
    fi
    rec alive "after=$what" "alive=$ok" "heartbeat_before=${hb0:-0}" "heartbeat_after=${hb:-0}" \
        "boots=$b" "stall_ms=$(stall_after "$name" "${hb0:-0}")"
    if [ $ok = yes ]; then
        say "alive after $what: heartbeat ${hb0:-0} -> $hb, boots $b"
    else
        fail "not alive after $what: $why"
        xl list
        guest_logs "$name" | xargs -r tail -n 5 | sed 's/^/    | /'
    fi
    [ $ok = yes ]
}

# --- streams -------------------------------------------------------------
file_bytes() { stat -c %s "$1" 2>/dev/null || echo 0; }

# Xen's own verifier (and rxmigrate's, when present) on a file.
verify_file() {
    local name=$1 file=$2
    op "$name.verify-stream-v2" -- env PYTHONPATH=$XEN_LIB/lib/python \
        python3 $XEN_LIB/bin/verify-stream-v2 -f xl -i "$file"
}

# Rounds, downtime and bytes from an rxmigrate --stats file (its summary line).
stats_fields() {
    [ -s "$1" ] || return 0
    python3 - "$1" <<'EOF'
import json, sys
summary = None
for line in open(sys.argv[1]):
    line = line.strip()
    if line:
        obj = json.loads(line)
        summary = obj.get("summary", summary)
if summary:
    print("rounds=%d" % summary["rounds"], "downtime_ms=%.0f" % summary["downtime_ms"],
          "stream_bytes=%d" % summary["total_bytes"], "policy=%s" % summary["policy"], sep="\t")
EOF
}

# --- rxmigrate -----------------------------------------------------------
RX=$BIN/rxmigrate
HELPER=$BIN/rxmigrate-save-helper
# "not available" (and exit) unless rxmigrate runs here with its Xen backend.
need_rxmigrate() {
    [ -x "$RX" ] || not_available "rxmigrate was not brought in (build it: cargo build --release)"
    local out
    # a lookup of a domain that cannot exist: harmless, and it needs the backend
    out=$("$RX" --hv xen save lab-no-such-domain "$SAVE_DIR/probe" 2>&1)
    rm -f "$SAVE_DIR/probe"
    if echo "$out" | grep -qiE 'not available|not implemented|unsupported hypervisor'; then
        not_available "rxmigrate's Xen backend: $(echo "$out" | head -1 | cut -c1-160)"
    fi
    rec meta "rxmigrate_version=$("$RX" --version 2>&1 | head -1)"
}
need_helper() {
    [ -x "$HELPER" ] || not_available "rxmigrate-save-helper was not built"
}
