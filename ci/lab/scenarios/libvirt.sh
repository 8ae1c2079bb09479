# shellcheck shell=bash
# shellcheck disable=SC2153 # NAME, TYPE, FILE, BIN come from scenario.sh and run.sh
# The `libvirt` family (sourced by scenario.sh after installed.sh and
# package.sh, whose steps it reuses): libvirt's libxl driver does the work
# instead of xl. The lab image has no libvirt: ci/lab/run fetches the
# packages it lacks on the host for this run (BIN/libvirt-debs) and they are
# installed here by `apt-get install FILE...`. libvirtd is started by hand (dom0 has no init
# system), then the .debs of ci/package go in while it runs; the guest is
# defined from XML with the kernel and initramfs of the xl config, `virsh
# start`, `virsh save`, `virsh restore`. libxl runs the save helper at its
# compiled-in path, so our helper must do both and say so in libvirt's libxl
# log; the file (libvirt's header, then libxl's stream) must verify; `apt-get
# remove` must give back Xen's helper, which then does the next `virsh save`
# and `virsh restore`.

LIBVIRT_DEBS=$BIN/libvirt-debs
LIBVIRT_LOG_DIR=/var/log/libvirt/libxl
LIBXL_LOG=$LIBVIRT_LOG_DIR/libxl-driver.log
LIBVIRT_CPU_MAP=/usr/share/libvirt/cpu_map
VIRSH=(virsh -c xen:///system)

libvirt_present() {
    command -v libvirtd >/dev/null && command -v virsh >/dev/null &&
        [ -n "$(libvirt_driver_module)" ]
}
libvirt_driver_module() {
    find /usr/lib -name libvirt_driver_libxl.so 2>/dev/null | head -1
}

# The packages ci/lab/run brought (what this image lacks of
# libvirt-daemon-driver-xen, libvirt-daemon and libvirt-clients, as apt
# resolved it against the image's dpkg status on the host): those not
# installed here, by one apt-get install of the files (dom0 has no
# network, and needs none: apt takes the packages from the files given).
# apt, not dpkg -i: it orders the installation by the packages'
# dependencies, and trixie's set needs that (cron Pre-Depends on
# cron-daemon-common, which one dpkg -i unpacks but configures too late).
libvirt_install() {
    local d p debs=() have=0
    [ -f "$LIBVIRT_DEBS/NOT-FETCHED" ] && not_available "$(head -1 "$LIBVIRT_DEBS/NOT-FETCHED")"
    ls "$LIBVIRT_DEBS"/*.deb >/dev/null 2>&1 ||
        not_available "no libvirt packages brought in (ci/lab/run fetches them when a libvirt-TYPE scenario is asked for)"
    for d in "$LIBVIRT_DEBS"/*.deb; do
        p=$(dpkg-deb -f "$d" Package)
        if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ]; then
            have=$((have + 1))
        else
            debs+=("$d")
        fi
    done
    rec meta "libvirt_debs=$((${#debs[@]} + have))" "libvirt_debs_already_installed=$have"
    if [ ${#debs[@]} -gt 0 ]; then
        # dmsetup's trigger would rebuild dom0's initramfs (a minute under
        # emulation) for nothing: this disk is a snapshot of the image,
        # dropped when the boot ends
        sed -i 's/^update_initramfs=.*/update_initramfs=no/' \
            /etc/initramfs-tools/update-initramfs.conf 2>/dev/null
        op libvirt-apt-install -- env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends "${debs[@]}" || return 1
    fi
    check_that libvirt-installed "$(dpkg-query -W -f='${Package} ${Version}; ' \
        libvirt-daemon-driver-xen libvirt-daemon libvirt-clients 2>&1)" -- libvirt_present
}

# LAB-ONLY WORKAROUND for the emulated CPU, never needed on a real host
# (docs/LAB.md, "libvirt"): libvirt's libxl driver must find a CPU model
# for the host features Xen reports, and in this lab none matches (Xen
# clears SEP from its view of any AMD CPU, QEMU's software emulation has no
# VME, and every libvirt model wants one of them), so libvirtd exits
# ("x86Decode: Cannot find suitable CPU model for given data"). A model of
# our own, qemu64's features less sep, for host decoding only, included
# from the map's index right after qemu64 (after the feature definitions,
# which the loader needs first). Idempotent.
libvirt_cpu_map() {
    local index=$LIBVIRT_CPU_MAP/index.xml
    [ -f "$index" ] || { fail "no $index (libvirt's CPU map)"; return 1; }
    cat >"$LIBVIRT_CPU_MAP/x86_qemu64-xen-amd.xml" <<'EOF'
<cpus>
  <!-- lab only (rxmigrate ci/lab): qemu64 less 'sep'. Xen clears SEP on
       AMD (cpu/amd.c init_amd), QEMU TCG has no VME, so no stock model
       decodes the libxl host CPU. -->
  <model name='qemu64-xen-amd'>
    <decode host='on' guest='off'/>
    <feature name='apic'/>
    <feature name='clflush'/>
    <feature name='cmov'/>
    <feature name='cx16'/>
    <feature name='cx8'/>
    <feature name='de'/>
    <feature name='fpu'/>
    <feature name='fxsr'/>
    <feature name='lm'/>
    <feature name='mca'/>
    <feature name='mce'/>
    <feature name='mmx'/>
    <feature name='msr'/>
    <feature name='mtrr'/>
    <feature name='nx'/>
    <feature name='pae'/>
    <feature name='pat'/>
    <feature name='pge'/>
    <feature name='pni'/>
    <feature name='pse'/>
    <feature name='pse36'/>
    <feature name='sse'/>
    <feature name='sse2'/>
    <feature name='syscall'/>
    <feature name='tsc'/>
  </model>
</cpus>
EOF
    grep -q "x86_qemu64-xen-amd.xml" "$index" ||
        sed -i "/<include filename='x86_qemu64.xml'\/>/a\    <include filename='x86_qemu64-xen-amd.xml'/>" "$index"
    check_that cpu-map-lab-model "$index: $(grep -a -A1 "x86_qemu64.xml" "$index" | tr -s ' \n' ' ')" -- \
        grep -q "<include filename='x86_qemu64-xen-amd.xml'/>" "$index"
}

# libvirtd with the libxl driver alone (LIBVIRT_DRIVER_DIR: a directory
# holding only that module; the QEMU driver Debian's libvirt-daemon depends
# on wants users and groups of libvirt-daemon-system, not installed here),
# logging at info level so that libxl passes our helper's info lines on.
# With LISTEN (an address), libvirtd also takes connections on it, by TCP
# without authentication (xen+tcp://LISTEN/system): the receiver of a
# migration in ci/lab/pair, whose only network is the private link between
# the two lab machines. Never anywhere else.
libvirt_start() {
    local listen=${1:-} dir=$SAVE_DIR/libvirt-drivers i flags=(-d)
    rm -rf "$dir"
    mkdir -p "$dir" "$LIBVIRT_LOG_DIR" /run/libvirt
    ln -s "$(libvirt_driver_module)" "$dir/"
    # the features Xen reports to libxl (word 0 without vme and sep here)
    rec meta "hw_caps=$(xl info | awk -F' *: ' '$1 == "hw_caps" { print $2 }')"
    cat >"$SAVE_DIR/libvirtd.conf" <<EOF
log_level = 2
log_outputs = "2:file:$OUT/$SCENARIO.libvirtd.log"
auth_unix_rw = "none"
auth_unix_ro = "none"
EOF
    if [ -n "$listen" ]; then
        printf '%s\n' 'listen_tls = 0' 'listen_tcp = 1' 'auth_tcp = "none"' \
            "listen_addr = \"$listen\"" >>"$SAVE_DIR/libvirtd.conf"
        flags+=(--listen)
        rec meta "libvirtd_listen=tcp://$listen:16509"
    fi
    # (libxl's driver writes its logs itself; virtlogd, if any, is harmless)
    command -v virtlogd >/dev/null && virtlogd -d >/dev/null 2>&1
    op libvirtd -- env LIBVIRT_DRIVER_DIR="$dir" libvirtd "${flags[@]}" -f "$SAVE_DIR/libvirtd.conf" || return 1
    # the socket appears once the drivers are up; each probe is bounded (a
    # daemon that accepts but never answers would hold virsh forever)
    for ((i = 0; i < 12; i++)); do
        timeout 20 "${VIRSH[@]}" version >/dev/null 2>&1 && break
        # a driver that fails to initialise takes libvirtd down with it
        pgrep -x libvirtd >/dev/null || break
        sleep 5
    done
    op virsh-version -- timeout 60 "${VIRSH[@]}" version || libvirt_unavailable
    rec meta "libvirt=$(timeout 20 "${VIRSH[@]}" version 2>/dev/null | tr '\n' ' ' | tr -s ' ')"
    # the model libvirt decoded the host CPU as (the lab's, above)
    timeout 20 "${VIRSH[@]}" capabilities >"$OUT/$SCENARIO.capabilities.xml" 2>&1
    rec meta "host_cpu_model=$(sed -n 's:.*<model>\(.*\)</model>.*:\1:p' "$OUT/$SCENARIO.capabilities.xml" | head -1)"
}

# libvirt's libxl driver does not answer: "not available", with its own
# error lines as the reason (the logs stay in OUT). Before the lab's CPU
# model above, libvirt 9.0's libxl driver failed to start here with
# "x86Decode: Cannot find suitable CPU model for given data", then
# "libxlCapsInitCPU: Failed to initialize host cpu features", and libvirtd
# exited.
libvirt_unavailable() {
    local why
    why=$(grep -a -h -m3 -iE 'error|unable|fail' "$OUT/$SCENARIO.libvirtd.log" "$LIBXL_LOG" \
        "$OUT/$SCENARIO.virsh-version.log" 2>/dev/null | tr '\n' ' ')
    libvirt_cleanup
    not_available "libvirt's libxl driver does not answer virsh here: ${why:-no error logged}"
}

libvirt_stop() {
    local p
    for p in $(pgrep -x libvirtd) $(pgrep -x virtlogd); do kill "$p" 2>/dev/null; done
    return 0
}

# The guest of guest_config as libvirt XML: the same kernel, initramfs,
# command line and memory. (`virsh domxml-from-native xen-xl` would keep
# on_reboot = "preserve", which libvirt does not allow for reboots.)
libvirt_xml() {
    local name=$1 type=$2 args
    args=$(guest_args)
    echo "<domain type='xen'>"
    echo "  <name>$name</name>"
    echo "  <memory unit='MiB'>$LAB_MEMORY</memory>"
    echo "  <vcpu>1</vcpu>"
    echo "  <os>"
    case $type in
        hvm)
            echo "    <type arch='x86_64' machine='xenfv'>hvm</type>"
            echo "    <loader type='rom'>$XEN_LIB/boot/hvmloader</loader>"
            ;;
        pvh) echo "    <type arch='x86_64' machine='xenpvh'>xenpvh</type>" ;;
        *) echo "    <type arch='x86_64' machine='xenpv'>linux</type>" ;;
    esac
    echo "    <kernel>/root/guest/vmlinuz</kernel>"
    echo "    <initrd>/root/guest/initrd.gz</initrd>"
    if [ "$type" = hvm ]; then
        echo "    <cmdline>console=ttyS0 $args</cmdline>"
    else
        echo "    <cmdline>console=hvc0 $args</cmdline>"
    fi
    echo "  </os>"
    [ "$type" = hvm ] && echo "  <features><acpi/><apic/><pae/></features>"
    echo "  <on_poweroff>destroy</on_poweroff>"
    echo "  <on_reboot>destroy</on_reboot>"
    echo "  <on_crash>preserve</on_crash>"
    echo "  <devices>"
    if [ "$type" = hvm ]; then
        # QEMU writes the serial port to the file the heartbeat checks read
        echo "    <serial type='file'><source path='$CONSOLE_DIR/guest-$name-serial.log'/><target port='0'/></serial>"
    else
        echo "    <console type='pty'><target type='xen' port='0'/></console>"
    fi
    echo "  </devices>"
    echo "</domain>"
}

# virsh define + start, and the first heartbeat.
libvirt_create() {
    local xml=$SAVE_DIR/$NAME.xml s
    xl destroy "$NAME" >/dev/null 2>&1
    rm -f "$CONSOLE_DIR"/guest-"$NAME"*.log*
    libvirt_xml "$NAME" "$TYPE" >"$xml"
    cp "$xml" "$OUT/$SCENARIO.domain.xml"
    op virsh-define -- timeout 60 "${VIRSH[@]}" define "$xml" || return 1
    s=$(now)
    op virsh-start -- timeout 300 "${VIRSH[@]}" start "$NAME" || return 1
    await_heartbeat "$NAME" "$s" "virsh start" || return 1
    say "guest $NAME up under libvirt, heartbeat $(heartbeat "$NAME")"
    capture_domain "$NAME" created
}

# The libxl stream of a virsh save file: libvirt's 64-byte header (magic
# "libvirt-xml\n \0 \r", version, length of the domain XML that follows)
# and the XML go; what is left is libxl's stream, as xl's format has it
# after its own header.
libvirt_stream() {
    python3 - "$1" "$2" <<'EOF'
import struct, sys
src, dst = sys.argv[1], sys.argv[2]
with open(src, "rb") as f:
    head = f.read(64)
    if len(head) < 64 or head[:16] != b"libvirt-xml\n \0 \r":
        sys.exit(f"{src}: no libvirt libxl save header (magic {head[:16]!r})")
    version, xml_len = struct.unpack_from("<II", head, 16)
    if xml_len > 1 << 20:
        sys.exit(f"{src}: domain XML of {xml_len} bytes claimed")
    f.seek(64 + xml_len)
    with open(dst, "wb") as out:
        while chunk := f.read(1 << 20):
            out.write(chunk)
print(f"libvirt header version {version}, domain XML {xml_len} bytes, stream from byte {64 + xml_len}")
EOF
}

# The new lines of libvirt's libxl logs (the driver's and the domain's)
# since OP started, kept as OUT/SCENARIO.OP.libxl.log; helper_line and
# no_handover read OP.log, so our helper's lines go there too, as
# "rxmigrate: TEXT".
LIBXL_MARKS=()
libxl_logs() { echo "$LIBXL_LOG" "$LIBVIRT_LOG_DIR/$NAME.log"; }
libxl_mark() {
    local f
    LIBXL_MARKS=()
    for f in $(libxl_logs); do LIBXL_MARKS+=("$(stat -c %s "$f" 2>/dev/null || echo 0)"); done
}
libxl_lines() {
    local op=$1 f n=0
    : >"$OUT/$SCENARIO.$op.libxl.log"
    for f in $(libxl_logs); do
        [ -f "$f" ] && tail -c +$((${LIBXL_MARKS[n]:-0} + 1)) "$f" >>"$OUT/$SCENARIO.$op.libxl.log"
        n=$((n + 1))
    done
    libxl_rxmigrate_lines "$OUT/$SCENARIO.$op.libxl.log" >>"$OUT/$SCENARIO.$op.log"
}
# Our helper's lines in libvirt's libxl log FILE, as "rxmigrate: TEXT".
# libvirt's libxl logger writes "YYYY-MM-DD HH:MM:SS.mmm+0000: CONTEXT:
# text", without the level (its log_level filters them): our context is
# "rxmigrate". (So no_handover here sees a hand-over, not a warning or
# error line; fallback = fail makes a hand-over an error anyway.)
libxl_rxmigrate_lines() {
    sed -n 's/^[^:]*:[^:]*:[^:]*: rxmigrate: \(.*\)$/rxmigrate: \1/p' "$1"
}

# virsh save to FILE: our helper's lines, the stream verified
virsh_save() {
    local op=$1 writer=$2
    [ "$TYPE" = hvm ] && keep_serial "$NAME"
    libxl_mark
    op "$op" -- timeout 600 "${VIRSH[@]}" save "$NAME" "$FILE" || { libxl_lines "$op"; return 1; }
    libxl_lines "$op"
    rec file "op=$op" "bytes=$(file_bytes "$FILE")" "writer=$writer"
    op "$op.libvirt-header" -- libvirt_stream "$FILE" "$FILE.libxl" || return 1
    # libxl's stream, as verify-stream-v2 -f libxl and rxmigrate verify read it
    op "$op.verify-stream-v2" -- env PYTHONPATH="$XEN_LIB/lib/python" \
        python3 "$XEN_LIB/bin/verify-stream-v2" -f libxl -i "$FILE.libxl"
    op "$op.rxmigrate-verify" -- "$BIN/rxmigrate" verify "$FILE.libxl"
    rm -f "$FILE.libxl"
}
virsh_restore() {
    local op=$1 hb0
    # (baseline once the saved guest is gone, as xl_restore does)
    hb0=$(heartbeat "$NAME")
    libxl_mark
    op "$op" -- timeout 600 "${VIRSH[@]}" restore "$FILE" || { libxl_lines "$op"; return 1; }
    libxl_lines "$op"
    rm -f "$FILE"
    check_alive "$NAME" "$hb0" "$op"
}

libvirt_cleanup() {
    timeout 30 "${VIRSH[@]}" destroy "$NAME" >/dev/null 2>&1
    timeout 30 "${VIRSH[@]}" undefine "$NAME" >/dev/null 2>&1
    libvirt_stop
    cp "$LIBXL_LOG" "$OUT/$SCENARIO.libxl-driver.log" 2>/dev/null
    cp "$LIBVIRT_LOG_DIR/$NAME.log" "$OUT/$SCENARIO.domain-libxl.log" 2>/dev/null
    package_cleanup
}

# A host of libvirt with our packages. libvirt first, as on a host that
# runs it: the packages, the lab's CPU model, libvirtd (which passes no
# LIBXL_SAVE_HELPER or RXMIGRATE_* on: package_preflight unset them),
# listening on LISTEN if given (libvirt_start); then rxmigrate's packages,
# with libvirtd running.
libvirt_setup() {
    package_preflight || return 1
    libvirt_install || return 1
    libvirt_cpu_map || return 1
    libvirt_start "${1:-}" || return 1
    op dpkg-i-rxmigrate -- dpkg -i "$PKG_RX" || return 1
    package_install_plugin || return 1
    rec meta "save_helper=$(readlink -f "$STOCK_PATH")" "version=$(rxmigrate --version)"
}

libvirt_sequence() {
    libvirt_setup || return 1
    libvirt_create || return 1

    # virsh save and restore through libxl, by our helper
    conf_for save
    virsh_save save rxmigrate-save-helper-libvirt || return 1
    helper_line save version '^rxmigrate: rxmigrate-save-helper [0-9.]+ \(git [0-9a-f]+; Xen [0-9.]+'
    helper_line save ran '^rxmigrate: non-live save of domain [0-9]+'
    helper_line save summary '^rxmigrate: save done, non-live: [0-9]+ rounds'
    no_handover save
    # the statistics file only our helper writes
    check_that save-stats "$OUT/$SCENARIO.save.stats.jsonl: $(wc -l <"$OUT/$SCENARIO.save.stats.jsonl" 2>/dev/null) lines" -- \
        test -s "$OUT/$SCENARIO.save.stats.jsonl"
    # shellcheck disable=SC2046
    rec stats "op=save" $(stats_fields "$OUT/$SCENARIO.save.stats.jsonl")
    virsh_restore restore || return 1
    helper_line restore summary '^rxmigrate: restore done: [0-9]+ pages into domain [0-9]+'
    no_handover restore

    # the package removed while libvirtd runs: Xen's helper does the next pair
    package_remove_plugin || return 1
    virsh_save save-stock xl || return 1
    no_rxmigrate save-stock
    virsh_restore restore-stock || return 1
    no_rxmigrate restore-stock
}
