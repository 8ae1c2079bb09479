# shellcheck shell=bash
# shellcheck disable=SC2153 # NAME, TYPE, FILE, BIN come from scenario.sh and run.sh
# The `libvirt` family (sourced by scenario.sh after installed.sh and
# package.sh, whose steps it reuses): the .debs installed with dpkg -i, then
# libvirt's libxl driver does the work instead of xl: libvirtd started by
# hand (dom0 has no init system), the guest defined from XML with the kernel
# and initramfs of the xl config, `virsh start`, `virsh save`, `virsh
# restore`. libxl runs the save helper at its compiled-in path, so our
# helper must do both and say so in libvirt's libxl log; the file (libvirt's
# header, then libxl's stream) must verify; `apt-get remove` must give back
# Xen's helper, which then does the next `virsh save` and `virsh restore`.

LIBVIRT_LOG_DIR=/var/log/libvirt/libxl
LIBXL_LOG=$LIBVIRT_LOG_DIR/libxl-driver.log

# libvirtd with the libxl driver alone (LIBVIRT_DRIVER_DIR: a directory
# holding only that module; the QEMU driver Debian's libvirt-daemon depends
# on wants users and groups of libvirt-daemon-system, not installed here),
# logging at info level so that libxl passes our helper's info lines on.
libvirt_start() {
    local mod dir=$SAVE_DIR/libvirt-drivers i
    command -v libvirtd >/dev/null && command -v virsh >/dev/null ||
        not_available "no libvirtd or virsh in this lab image (ci/lab/build installs them for Xen 4.17 only)"
    mod=$(find /usr/lib -name libvirt_driver_libxl.so 2>/dev/null | head -1)
    [ -n "$mod" ] || not_available "no libvirt libxl driver (libvirt-daemon-driver-xen) in this lab image"
    rm -rf "$dir"
    mkdir -p "$dir" "$LIBVIRT_LOG_DIR" /run/libvirt
    ln -s "$mod" "$dir/"
    cat >"$SAVE_DIR/libvirtd.conf" <<EOF
log_level = 2
log_outputs = "2:file:$OUT/$SCENARIO.libvirtd.log"
auth_unix_rw = "none"
auth_unix_ro = "none"
EOF
    # (libxl's driver writes its logs itself; virtlogd, if any, is harmless)
    command -v virtlogd >/dev/null && virtlogd -d >/dev/null 2>&1
    op libvirtd -- env LIBVIRT_DRIVER_DIR="$dir" libvirtd -d -f "$SAVE_DIR/libvirtd.conf" || return 1
    # the socket appears once the drivers are up; each probe is bounded (a
    # daemon that accepts but never answers would hold virsh forever)
    for ((i = 0; i < 12; i++)); do
        timeout 20 virsh -c xen:///system version >/dev/null 2>&1 && break
        # a driver that fails to initialise takes libvirtd down with it
        pgrep -x libvirtd >/dev/null || break
        sleep 5
    done
    op virsh-version -- timeout 60 virsh -c xen:///system version || libvirt_unavailable

    rec meta "libvirt=$(virsh -c xen:///system version 2>/dev/null | tr '\n' ' ' | tr -s ' ')"
}

# libvirt's libxl driver does not answer here: "not available", with its
# own error lines as the reason (the logs stay in OUT). In the lab's nested
# Xen (QEMU's qemu64,+svm,+npt CPU) libvirt 9.0's libxl driver fails to
# start: x86Decode finds no CPU model for the CPUID data Xen reports
# ("Cannot find suitable CPU model for given data", then libxlCapsInitCPU
# "Failed to initialize"), and libvirtd exits.
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

VIRSH=(virsh -c xen:///system)

# The guest of guest_config as libvirt XML: the same kernel, initramfs,
# command line and memory. (`virsh domxml-from-native xen-xl` would keep
# on_reboot = "preserve", which libvirt does not allow for reboots.)
libvirt_xml() {
    local name=$1 type=$2 work hot sweep rate args
    IFS=: read -r work hot sweep rate <<<"$LAB_WORKLOAD"
    args="quiet lab.work=$work${hot:+ lab.hot=$hot}${sweep:+ lab.sweep=$sweep}${rate:+ lab.rate=$rate}"
    echo "<domain type='xen'>"
    echo "  <name>$name</name>"
    echo "  <memory unit='MiB'>$LAB_MEMORY</memory>"
    echo "  <vcpu>1</vcpu>"
    echo "  <os>"
    if [ "$type" = hvm ]; then
        echo "    <type arch='x86_64' machine='xenfv'>hvm</type>"
        echo "    <loader type='rom'>$XEN_LIB/boot/hvmloader</loader>"
    else
        echo "    <type arch='x86_64' machine='xenpv'>linux</type>"
    fi
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
    local xml=$SAVE_DIR/$NAME.xml i s
    xl destroy "$NAME" >/dev/null 2>&1
    rm -f "$CONSOLE_DIR"/guest-"$NAME"*.log*
    libvirt_xml "$NAME" "$TYPE" >"$xml"
    cp "$xml" "$OUT/$SCENARIO.domain.xml"
    op virsh-define -- "${VIRSH[@]}" define "$xml" || return 1
    s=$(now)
    op virsh-start -- "${VIRSH[@]}" start "$NAME" || return 1
    for ((i = 0; i < LAB_BOOT_WAIT; i++)); do
        grep -aqs HEARTBEAT "$CONSOLE_DIR"/guest-"$NAME"*.log && break
        [ $((i % 15)) = 14 ] && ! domain_exists "$NAME" && break
        sleep 1
    done
    if [ -z "$(heartbeat "$NAME")" ]; then
        rec step "op=boot" "rc=1" "secs=$(secs_since "$s")"
        guest_tail "$NAME"
        fail "guest $NAME showed no heartbeat within ${LAB_BOOT_WAIT}s of virsh start"
        return 1
    fi
    rec step "op=boot" "rc=0" "secs=$(secs_since "$s")" "heartbeat=$(heartbeat "$NAME")"
    say "guest $NAME up under libvirt, heartbeat $(heartbeat "$NAME")"
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
    # libvirt writes "TIMESTAMP: CONTEXT: text", without the level (its
    # log_level filters them): our context is "rxmigrate"
    sed -n 's/^[^:]*:[^:]*:[^:]*: rxmigrate: \(.*\)$/rxmigrate: \1/p' \
        "$OUT/$SCENARIO.$op.libxl.log" >>"$OUT/$SCENARIO.$op.log"
}

# virsh save to FILE: our helper's lines, the stream verified
virsh_save() {
    local op=$1 writer=$2
    [ "$TYPE" = hvm ] && keep_serial "$NAME"
    libxl_mark
    op "$op" -- "${VIRSH[@]}" save "$NAME" "$FILE" || { libxl_lines "$op"; return 1; }
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
    hb0=$(heartbeat "$NAME")
    libxl_mark
    op "$op" -- "${VIRSH[@]}" restore "$FILE" || { libxl_lines "$op"; return 1; }
    libxl_lines "$op"
    rm -f "$FILE"
    check_alive "$NAME" "$hb0" "$op"
}

libvirt_cleanup() {
    "${VIRSH[@]}" destroy "$NAME" >/dev/null 2>&1
    "${VIRSH[@]}" undefine "$NAME" >/dev/null 2>&1
    libvirt_stop
    cp "$LIBXL_LOG" "$OUT/$SCENARIO.libxl-driver.log" 2>/dev/null
    cp "$LIBVIRT_LOG_DIR/$NAME.log" "$OUT/$SCENARIO.domain-libxl.log" 2>/dev/null
    package_cleanup
}

libvirt_sequence() {
    package_preflight || return 1
    op dpkg-i-rxmigrate -- dpkg -i "$PKG_RX" || return 1
    package_install_plugin || return 1
    rec meta "save_helper=$(readlink -f "$STOCK_PATH")" "version=$(rxmigrate --version)"

    libvirt_start || return 1
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
