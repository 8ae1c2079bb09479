# Helpers for the lab scenarios; runs in dom0 (sourced by scenario.sh).
#
# Environment (set by run.sh): OUT (results directory), BIN (rxmigrate
# binaries), LAB_MEMORY (guest MiB), LAB_WORKLOAD (idle | dirty:HOT:SWEEP:RATE),
# LAB_BOOT_WAIT (seconds for a guest to show its first heartbeat).

PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# the installed Xen's tools: /usr/lib/xen-4.17 (bookworm), /usr/lib/xen-4.20 (trixie)
XEN_LIB=$(ls -d /usr/lib/xen-[0-9]* 2>/dev/null | sort -V | tail -1)
CONSOLE_DIR=/var/log/xen/console
SAVE_DIR=/var/lib/xenlab
mkdir -p "$SAVE_DIR"

now() { date +%s.%N; }
secs_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
say() { echo "[$(date +%T)] $SCENARIO: $*"; }

# --- the record of one scenario ------------------------------------------
# Lines of tab-separated key=value pairs; report.py turns them into JSON.
# On the transfer disk: a boot that hangs keeps the records made before it
# (ci/lab/run builds the scenario's JSON from them).
REC=$OUT/$SCENARIO.rec
rec_reset() { : >"$REC"; }
rec() { local IFS=$'\t'; echo "$*" >>"$REC"; }
# first failure wins: it is the reason shown in the table
FAILED=""
fail() { [ -n "$FAILED" ] || FAILED=$*; say "FAIL: $*"; }
finish() {
    local status=pass reason=""
    # refused as expected, and everything else passed
    [ -n "${NOT_SUPPORTED:-}" ] && status="not supported" reason="by this hypervisor (no shadow paging): $NOT_SUPPORTED"
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
    local name=$1 extra=() s rc secs why
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
        # the first error line names the cause; what follows is fallout
        why=$(grep -a -m1 -iE 'error|fail' "$OUT/$SCENARIO.$name.log")
        [ -n "$why" ] || why=$(grep -av '^\s*$' "$OUT/$SCENARIO.$name.log" | tail -1)
        fail "$name exited $rc (${why:0:200})"
    else
        say "$name ok in ${secs}s"
    fi
    return $rc
}

# --- what the hypervisor can do ---------------------------------------------
# A PV guest's log-dirty mode (live save, migration) is shadow paging's:
# a hypervisor built without CONFIG_SHADOW_PAGING (Debian's since XSA-495)
# has no "shadow" in virt_caps and refuses it, to stock xl and to us alike.
# Patterns of the refusals, checked in the operation's output:
#   stock xl (libxc): xc: error: Failed to enable logdirty: 95,22,0 (95: EOPNOTSUPP)
#   rxmigrate and its helper: the refusal names shadow paging
REFUSAL_STOCK='Failed to enable logdirty: 95'
REFUSAL_RX='shadow paging'
VIRT_CAPS=""
has_shadow_paging() {
    [ -n "$VIRT_CAPS" ] || VIRT_CAPS=$(xl info | awk -F' *: ' '$1 == "virt_caps" { print $2 }')
    [[ " $VIRT_CAPS " == *" shadow "* ]]
}
live_pv_unsupported() {
    [ "$TYPE" = pv ] && ! has_shadow_paging
}

# A live PV operation where the hypervisor cannot do it:
#   op_refused NAME PATTERN -- COMMAND...
# The command must fail, its output must hold PATTERN (the expected refusal),
# and the guest must run on where it was. Then the scenario reports "not
# supported" (unless something else failed).
NOT_SUPPORTED=""
op_refused() {
    local name=$1 pattern=$2 s rc why left hb0
    shift 3
    say "$name (no shadow paging here: must be refused): $*"
    hb0=$(heartbeat "$NAME")
    s=$(now)
    "$@" >"$OUT/$SCENARIO.$name.log" 2>&1
    rc=$?
    rec step "op=$name" "rc=$rc" "secs=$(secs_since "$s")" "expected=refusal"
    if [ $rc = 0 ]; then
        check "$name-refused" no "it succeeded on a hypervisor without shadow paging (virt_caps: $VIRT_CAPS)"
        return 1
    fi
    why=$(grep -a -m1 -iE "$pattern" "$OUT/$SCENARIO.$name.log")
    if [ -z "$why" ]; then
        sed 's/^/    | /' "$OUT/$SCENARIO.$name.log" | tail -15
        why=$(grep -a -m1 -iE 'error|fail' "$OUT/$SCENARIO.$name.log")
        check "$name-refused" no "exit $rc, but not with the refusal /$pattern/: ${why:0:200}"
        return 1
    fi
    check "$name-refused" yes "exit $rc: ${why:0:300}"
    # the guest runs on where it was, and nothing of the attempt is left
    check_alive "$NAME" "$hb0" "$name-refused" || return 1
    left=$(xl list | awk 'NR > 1 && $1 != "Domain-0" && $1 != "'"$NAME"'" { print $1 }')
    [ -z "$left" ] || { fail "the refused $name left domain(s) behind: $left"; return 1; }
    NOT_SUPPORTED="${NOT_SUPPORTED:+$NOT_SUPPORTED; }$name refused: ${why:0:120}"
    return 0
}

# One named check in the record; a failed one fails the scenario.
# Usage: check NAME yes|no DETAIL...
check() {
    local name=$1 ok=$2
    shift 2
    rec check "name=$name" "ok=$ok" "detail=$*"
    if [ "$ok" = yes ]; then say "check $name: $*"; else fail "$name: $*"; fi
    [ "$ok" = yes ]
}

# --- guests --------------------------------------------------------------
# Writes the xl config of a test guest: no disks, no network; the dom0's
# kernel with the lab initramfs; on_reboot/on_crash "preserve" so a crash
# leaves the domain (and its console) for the record instead of rebooting.
# The lab initramfs's part of a test guest's kernel command line: the
# workload of LAB_WORKLOAD (also used by libvirt.sh's domain XML).
guest_args() {
    local work hot sweep rate
    IFS=: read -r work hot sweep rate <<<"$LAB_WORKLOAD"
    if [ "$work" = random ]; then
        echo "quiet lab.work=random lab.fill=$hot"
    else
        echo "quiet lab.work=$work${hot:+ lab.hot=$hot}${sweep:+ lab.sweep=$sweep}${rate:+ lab.rate=$rate}"
    fi
}
guest_config() {
    local name=$1 type=$2 cfg=$SAVE_DIR/$1.cfg args
    args=$(guest_args)
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

# Reads every console log of guest NAME -- xenconsoled's (also under the
# temporary names of a migration, NAME--incoming), the HVM serial file, and
# the copies of it kept before operations that start a new device model
# (QEMU truncates the file when it opens it) -- in one awk, since process
# starts are slow in an emulated dom0. Prints three fields:
#   the highest heartbeat ("-" if none), the number of distinct kernel boots,
#   the longest work-loop stall (ms) in heartbeats numbered above FROM.
console_scan() {
    local name=$1 from=${2:-0} files=() f
    for f in "$CONSOLE_DIR/guest-$name.log" "$CONSOLE_DIR/guest-$name"--*.log \
        "$CONSOLE_DIR/guest-$name"-serial.log*; do
        [ -f "$f" ] && files+=("$f")
    done
    [ ${#files[@]} = 0 ] && { echo "- 0 0"; return; }
    awk -v from="$from" '
        match($0, /HEARTBEAT [0-9]+/) {
            n = substr($0, RSTART + 10, RLENGTH - 10) + 0
            if (!seen || n > hb) hb = n
            seen = 1
            if (n > from + 0 && match($0, /gap_ms=[0-9]+/)) {
                g = substr($0, RSTART + 7, RLENGTH - 7) + 0
                if (g > stall) stall = g
            }
        }
        match($0, /GUEST-UP boot=[0-9a-f-]+/) { ids[substr($0, RSTART, RLENGTH)] = 1 }
        END { b = 0; for (i in ids) b++; print (seen ? hb : "-"), b, stall + 0 }' "${files[@]}"
}
heartbeat() { local r; r=$(console_scan "$1"); r=${r%% *}; [ "$r" != - ] && echo "$r"; return 0; }
# work_rate NAME FROM [TO]: the guest's work loop passes per second of its
# clock (ticks=, t_ms=) from heartbeat FROM to heartbeat TO (default: the
# newest seen); empty when the console does not show both.
work_rate() {
    local name=$1 from=$2 to=${3:-} files=() f
    for f in "$CONSOLE_DIR/guest-$name.log" "$CONSOLE_DIR/guest-$name"--*.log \
        "$CONSOLE_DIR/guest-$name"-serial.log*; do
        [ -f "$f" ] && files+=("$f")
    done
    [ ${#files[@]} = 0 ] && return 0
    awk -v from="$from" -v to="$to" '
        match($0, /HEARTBEAT [0-9]+/) {
            n = substr($0, RSTART + 10, RLENGTH - 10) + 0
            if (match($0, /ticks=[0-9]+/)) t[n] = substr($0, RSTART + 6, RLENGTH - 6) + 0
            if (match($0, /t_ms=[0-9]+/)) ms[n] = substr($0, RSTART + 5, RLENGTH - 5) + 0
            if (n > top) top = n
        }
        END {
            b = (to == "" ? top : to + 0)
            if (b > from + 0 && (from in t) && (b in t) && ms[b] > ms[from])
                printf "%.2f\n", (t[b] - t[from]) * 1000 / (ms[b] - ms[from])
        }' "${files[@]}"
}
# work_ratio NAME HB0: the guest's work rate from heartbeat HB0 to now over
# its rate in the (up to) 5 heartbeats before HB0; empty when either is unknown.
work_ratio() {
    local name=$1 hb0=$2 before after
    [ "${hb0:-0}" -ge 2 ] || return 0
    before=$(work_rate "$name" $((hb0 > 5 ? hb0 - 5 : 1)) "$hb0")
    after=$(work_rate "$name" "$hb0")
    [ -n "$before" ] && [ -n "$after" ] || return 0
    python3 -c 'import sys; b, a = map(float, sys.argv[1:]); print("%.3f" % (a / b) if b > 0 else "")' \
        "$before" "$after"
}
guest_tail() { tail -n 5 "$CONSOLE_DIR/guest-$1"*.log 2>/dev/null | sed 's/^/    | /'; }
keep_serial() {
    local f=$CONSOLE_DIR/guest-$1-serial.log
    [ -f "$f" ] && cp "$f" "$f.$(date +%s%N)"
    return 0
}
domain_exists() { xl domid "$1" >/dev/null 2>&1; }
# Device models (QEMU) running for domain id $1.
dm_procs() { pgrep -f -- "-xen-domid $1( |\$)" 2>/dev/null; }

# Destroy NAME with xl and check nothing of it is left: no domain, and no
# device model (rxmigrate starts QEMU for HVM guests it restores; xl destroy
# must stop it through the domain's device-model-pid as it does libxl's).
destroy_checked() {
    local name=$1 domid i left
    domid=$(xl domid "$name" 2>/dev/null) || return 0
    op destroy -- xl destroy "$name" || return 1
    for ((i = 0; i < 20; i++)); do
        left=$(dm_procs "$domid")
        [ -z "$left" ] && break
        sleep 0.5
    done
    rec cleanup "domid=$domid" "device_model_left=${left:-none}"
    if [ -n "$left" ]; then
        fail "device model of domain $domid (pid $left) still runs after xl destroy"
        return 1
    fi
    say "domain $domid and its device model are gone"
}

# Create guest NAME of TYPE and wait for its first heartbeat.
guest_create() {
    local name=$1 type=$2 cfg s
    xl destroy "$name" >/dev/null 2>&1
    rm -f "$CONSOLE_DIR"/guest-"$name"*.log*
    cfg=$(guest_config "$name" "$type")
    s=$(now)
    op create -- xl create "$cfg" || return 1
    await_heartbeat "$name" "$s" "xl create" || return 1
    say "guest $name up, heartbeat $(heartbeat "$name")"
    capture_domain "$name" created
}

# Wait for the first heartbeat of guest NAME, started at S (a `now`) by HOW
# (for the message), and record the boot step; 1 when none came within
# LAB_BOOT_WAIT seconds or the domain went away.
await_heartbeat() {
    local name=$1 s=$2 how=$3 i
    # one cheap grep a second: process starts are slow in an emulated dom0
    for ((i = 0; i < LAB_BOOT_WAIT; i++)); do
        grep -aqs HEARTBEAT "$CONSOLE_DIR"/guest-"$name"*.log && break
        [ $((i % 15)) = 14 ] && ! domain_exists "$name" && break
        sleep 1
    done
    if [ -z "$(heartbeat "$name")" ]; then
        rec step "op=boot" "rc=1" "secs=$(secs_since "$s")"
        guest_tail "$name"
        fail "guest $name showed no heartbeat within ${LAB_BOOT_WAIT}s of $how"
        return 1
    fi
    rec step "op=boot" "rc=0" "secs=$(secs_since "$s")" "heartbeat=$(heartbeat "$name")"
}

# For the record (and as test fixtures): xl's stored config of guest NAME and,
# for HVM, the argv of the device model libxl started for it.
capture_domain() {
    local name=$1 when=$2 domid pid
    domid=$(xl domid "$name" 2>/dev/null) || return 0
    xl list -l "$name" >"$OUT/$SCENARIO.$when.xl-config.json" 2>&1
    pid=$(xenstore-read "/local/domain/$domid/image/device-model-pid" 2>/dev/null) || return 0
    [ -r "/proc/$pid/cmdline" ] &&
        tr '\0' '\n' <"/proc/$pid/cmdline" >"$OUT/$SCENARIO.$when.dm-argv.txt"
    return 0
}

# Liveness after an operation: the domain exists, its heartbeat moves past
# HB0 (the value before the operation: the counter lives in guest memory, so
# it carries on across save/restore), and it booted exactly once -- or, for
# a guest brought from another lab (CHECK_BOOTS=0), never on this host.
check_alive() {
    local name=$1 hb0=${2:-0} what=$3 i hb b stall ok=yes why=""
    for ((i = 0; i < 90; i++)); do
        read -r hb b stall <<<"$(console_scan "$name" "$hb0")"
        [ "$hb" != - ] && [ "$hb" -gt "$hb0" ] && break
        sleep 1
    done
    [ "$hb" = - ] && hb=0
    if ! domain_exists "$name"; then
        ok=no why="domain $name is gone"
    elif [ "$hb" -le "$hb0" ]; then
        ok=no why="heartbeat stuck at $hb for 90s"
    elif [ "$b" != "${CHECK_BOOTS:-1}" ]; then
        ok=no why="guest booted $b times here, not ${CHECK_BOOTS:-1} (a silent reboot)"
    fi
    rec alive "after=$what" "alive=$ok" "heartbeat_before=$hb0" "heartbeat_after=$hb" \
        "boots=$b" "stall_ms=$stall"
    if [ $ok = yes ]; then
        say "alive after $what: heartbeat $hb0 -> $hb, boots $b, longest stall ${stall}ms"
    else
        fail "not alive after $what: $why"
        xl list
        guest_tail "$name"
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
    # rxmigrate's own reader on every file, stock xl's included (it needs no
    # Xen backend): the verdict, and the full listing for the record.
    if [ -x "$BIN/rxmigrate" ]; then
        op "$name.rxmigrate-verify" -- "$BIN/rxmigrate" verify "$file"
        op "$name.rxmigrate-inspect" -- "$BIN/rxmigrate" inspect "$file"
    fi
}

# The xl config (JSON) in the header of an xl save file.
file_config() {
    python3 - "$1" <<'EOF'
import struct, sys
with open(sys.argv[1], "rb") as f:
    # 32 bytes of magic, byte order, mandatory flags, optional flags, optional
    # data length; the optional data is the config's length and the config
    head = f.read(52)
    (n,) = struct.unpack_from("<I", head, 48)
    sys.stdout.write(f.read(n).rstrip(b"\0").decode())
EOF
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
