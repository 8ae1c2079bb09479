# shellcheck shell=bash
# shellcheck disable=SC2153 # NAME, TYPE, BIN, STATS come from scenario.sh and run.sh
# shellcheck disable=SC2029 # peer commands are expanded here, on purpose
# The cross-release family (sourced by scenario.sh), on machine A of a
# two-machine lab (ci/lab/pair): a live migration of a running guest with the
# dirty workload to machine B (LAB_PEER_ADDR), which may run another Xen
# release. The guest must run on B afterwards (its heartbeat moving on B's
# console, never booted there) and be gone from A.
#
#   cross-xl-TYPE      stock `xl migrate NAME B` (ssh, Xen's helper on both sides)
#   cross-rx-TYPE      `rxmigrate migrate NAME B:PORT` to `rxmigrate receive
#                      --listen` on B, over rxmigrate's authenticated transport
#   cross-plugin-TYPE  `xl migrate NAME B` with xl-plugin/install.sh's helper
#                      in place on both machines
#   cross-libvirt-TYPE `virsh migrate --live NAME xen+tcp://B/system` between
#                      two libvirtds (libvirt.sh), our .debs on both machines

PEER=${LAB_PEER_ADDR:-}
PEER_BIN=/mnt/xfer/bin
RX_PORT=8002
RX_KEYS=$SAVE_DIR/rxkeys
# (a new login takes 20-45 s in two emulated dom0s on a busy host: the
# sender shares one connection, peer.sh; the limit is for a lost master)
peer() { ssh -o ConnectTimeout=60 "$PEER" "$@"; }

# console_scan (lib.sh) of guest $1 on B, heartbeats above $2
peer_scan() {
    # shellcheck disable=SC2029 # expanded here on purpose
    peer "SCENARIO=$SCENARIO BIN=$PEER_BIN bash -c '. /mnt/xfer/scenarios/lib.sh; console_scan $1 ${2:-0}'"
}

# Like check_alive, for the guest on B: the domain exists there, its
# heartbeat moves past HB0 (the last one it printed on A), and it never
# booted on B (the boot happened on A).
check_alive_peer() {
    local name=$1 hb0=${2:-0} what=$3 i hb=- b=0 stall=0 ok=yes why=""
    for ((i = 0; i < 45; i++)); do
        read -r hb b stall <<<"$(peer_scan "$name" "$hb0")"
        [ "${hb:--}" != - ] && [ "$hb" -gt "$hb0" ] && break
        sleep 2
    done
    [ "${hb:--}" = - ] && hb=0
    if ! peer xl domid "$name" >/dev/null 2>&1; then
        ok=no why="domain $name is not on $PEER"
    elif [ "$hb" -le "$hb0" ]; then
        ok=no why="heartbeat on $PEER stuck at $hb (last on this host $hb0) for 90s"
    elif [ "${b:-0}" != 0 ]; then
        ok=no why="guest booted $b times on $PEER (a fresh boot, not the migrated guest)"
    fi
    rec alive "after=$what" "alive=$ok" "heartbeat_before=$hb0" "heartbeat_after=$hb" \
        "boots=${b:-0}" "stall_ms=${stall:-0}" "host=$PEER"
    if [ $ok = yes ]; then
        say "alive on $PEER after $what: heartbeat $hb0 -> $hb, boots there ${b:-0}, longest stall ${stall}ms"
    else
        fail "not alive on $PEER after $what: $why"
        peer xl list
        peer "tail -n 5 /var/log/xen/console/guest-$name*.log" 2>/dev/null | sed 's/^/    | /'
    fi
    [ $ok = yes ]
}

# After a migration: nothing of the guest left here, the guest alive on B.
check_moved() {
    local what=$1 hb0
    if domain_exists "$NAME"; then
        check source-gone no "$NAME still exists on this host after $what"
    else
        check source-gone yes "$NAME is gone from this host"
    fi
    # the source is gone: this host's console has its last heartbeat
    hb0=$(heartbeat "$NAME")
    check_alive_peer "$NAME" "${hb0:-0}" "$what"
}

# B's Xen release and the link, for the record; no leftovers of an earlier
# scenario on B.
peer_prepare() {
    [ -n "$PEER" ] || not_available "no peer machine (run cross-* scenarios with ci/lab/pair)"
    local v
    v=$(peer "xl info" 2>"$OUT/$SCENARIO.peer.log" | awk -F' *: ' '$1 == "xen_version" { print $2 }')
    [ -n "$v" ] || { fail "no ssh to the peer $PEER: $(tail -1 "$OUT/$SCENARIO.peer.log")"; return 1; }
    rec meta "source_xen=$(xl info | awk -F' *: ' '$1 == "xen_version" { print $2 }')" \
        "destination_xen=$v" "destination=$PEER"
    say "destination $PEER runs Xen $v"
    peer "xl destroy $NAME; rm -f /var/log/xen/console/guest-$NAME*" >/dev/null 2>&1
    return 0
}

# The rxmigrate transport keys: a pair on each side, A's key authorized on
# B, B's key pinned in A's known_hosts.
rx_keys() {
    local bkey
    rm -rf "$RX_KEYS"
    op keygen -- "$RX" keygen --key-dir "$RX_KEYS" || return 1
    op peer-keygen -- peer "rm -rf $RX_KEYS; $PEER_BIN/rxmigrate keygen --key-dir $RX_KEYS" || return 1
    bkey=$(peer "cat $RX_KEYS/key.pub" | cut -d' ' -f1)
    [ -n "$bkey" ] || { fail "no key.pub from $PEER"; return 1; }
    echo "$PEER $bkey lab-peer" >"$RX_KEYS/known_hosts"
    peer "cat >$RX_KEYS/authorized_peers" <"$RX_KEYS/key.pub" || { fail "cannot authorize this key on $PEER"; return 1; }
}

cross_rx() {
    local rpid i
    need_rxmigrate
    rx_keys || return 1
    # one migration, then it exits; its log comes back here through ssh
    peer "$PEER_BIN/rxmigrate -v --hv xen receive --listen $PEER:$RX_PORT --key-dir $RX_KEYS" \
        >"$OUT/$SCENARIO.rx-receive.log" 2>&1 &
    rpid=$!
    for ((i = 0; i < 30; i++)); do
        peer "ss -ltn | grep -q ':$RX_PORT '" && break
        if ! kill -0 "$rpid" 2>/dev/null; then
            sed 's/^/    | /' "$OUT/$SCENARIO.rx-receive.log" | tail -5
            fail "rxmigrate receive on $PEER exited before listening: $(tail -1 "$OUT/$SCENARIO.rx-receive.log")"
            return 1
        fi
        sleep 1
    done
    say "rxmigrate receive listens on $PEER:$RX_PORT"
    [ "$TYPE" = hvm ] && keep_serial "$NAME"
    if ! op rx-migrate -- "$RX" --hv xen migrate "$NAME" "$PEER:$RX_PORT" --key-dir "$RX_KEYS" \
        --stats "$STATS"; then
        kill "$rpid" 2>/dev/null
        peer "pkill -x rxmigrate" 2>/dev/null
        return 1
    fi
    # the receiver is done when the sender is; bounded all the same
    for ((i = 0; i < 60; i++)); do
        kill -0 "$rpid" 2>/dev/null || break
        sleep 1
    done
    if kill -0 "$rpid" 2>/dev/null; then
        fail "rxmigrate receive on $PEER did not exit 60 s after the migration"
        kill "$rpid" 2>/dev/null
    else
        wait "$rpid" || fail "rxmigrate receive on $PEER exited $? (see $SCENARIO.rx-receive.log)"
    fi
    # shellcheck disable=SC2046
    rec stats "op=rx-migrate" $(stats_fields "$STATS")
    check_moved rx-migrate
}

cross_xl() {
    [ "$TYPE" = hvm ] && keep_serial "$NAME"
    op migrate -- xl migrate "$NAME" "$PEER" || return 1
    check_moved migrate
}

# install.sh on both machines, with the lab's settings (no hand-over to
# Xen's helper, statistics per side); always uninstalled at the end.
CONF=/etc/rxmigrate.conf
plugin_install() {
    local side
    op install -- "$BIN/install.sh" install --binary "$HELPER" || return 1
    op peer-install -- peer "$PEER_BIN/install.sh install --binary $PEER_BIN/rxmigrate-save-helper" || return 1
    for side in here peer; do
        local conf_cmd="{ cat $CONF; echo '# added by the lab scenario $SCENARIO'; echo 'fallback = fail'; echo 'stats = /tmp/$SCENARIO.stats.jsonl'; } >$CONF.new && mv $CONF.new $CONF"
        if [ $side = here ]; then bash -c "$conf_cmd"; else peer "$conf_cmd"; fi
    done
}
plugin_uninstall() {
    "$BIN/install.sh" uninstall >>"$OUT/$SCENARIO.cleanup.log" 2>&1
    peer "$PEER_BIN/install.sh uninstall" >>"$OUT/$SCENARIO.cleanup.log" 2>&1
    return 0
}
cross_plugin() {
    local line
    need_helper
    [ -x "$BIN/install.sh" ] || not_available "install.sh was not brought in"
    unset LIBXL_SAVE_HELPER
    plugin_install || return 1
    op migrate -- xl migrate "$NAME" "$PEER" || return 1
    # both helpers were ours: the sender's live save, the receiver's restore
    # (its stderr comes back through ssh into the same log)
    line=$(grep -a -m1 -E '^rxmigrate: info: save done, ' "$OUT/$SCENARIO.migrate.log")
    check sender-helper "$([ -n "$line" ] && echo yes || echo no)" "${line:-no save summary from rxmigrate-save-helper}"
    line=$(grep -a -m1 -E '^rxmigrate: info: restore done: ' "$OUT/$SCENARIO.migrate.log")
    check receiver-helper "$([ -n "$line" ] && echo yes || echo no)" "${line:-no restore summary from the helper on the receiver}"
    line=$(grep -a -m1 -E 'handing over to the stock helper|^rxmigrate: (error|warning)' "$OUT/$SCENARIO.migrate.log")
    check no-handover "$([ -z "$line" ] && echo yes || echo no)" "${line:-no hand-over or error from rxmigrate}"
    cp "/tmp/$SCENARIO.stats.jsonl" "$OUT/$SCENARIO.migrate.stats.jsonl" 2>/dev/null
    # shellcheck disable=SC2046
    rec stats "op=migrate" $(stats_fields "$OUT/$SCENARIO.migrate.stats.jsonl")
    check_moved migrate
}

# libvirt-peer.sh ACTION on B, with what it needs of this machine's
# environment (the transfer disks have the same layout)
peer_libvirt() {
    local loader=""
    [ "$TYPE" = hvm ] && loader=$XEN_LIB/boot/hvmloader
    peer "OUT=$OUT BIN=$PEER_BIN LAB_MEMORY=$LAB_MEMORY LAB_WORKLOAD=$LAB_WORKLOAD LAB_PEER_SELF=$PEER" \
        "LAB_GUEST_LOADER=$loader bash /mnt/xfer/scenarios/libvirt-peer.sh $1 $SCENARIO"
}
# B made a host of libvirt with our packages, its libvirtd listening on the
# link: its steps, checks and facts taken into this record as B's (peer-OP,
# peer-CHECK, peer_KEY), its result as this scenario's precondition.
peer_libvirt_setup() {
    local brec=$OUT/$SCENARIO.receiver.rec status reason
    op peer-libvirt-setup -- peer_libvirt setup || return 1
    peer "cat $OUT/$SCENARIO.rec" >"$brec" 2>/dev/null
    awk -F'\t' -v OFS='\t' '
        $1 == "step" || $1 == "check" { for (i = 2; i <= NF; i++) sub(/^(op|name)=/, "&peer-", $i); print }
        $1 == "meta" { for (i = 2; i <= NF; i++) $i = "peer_" $i; print }' "$brec" >>"$REC"
    status=$(result_field status "$brec")
    reason=$(result_field reason "$brec")
    case $status in
        pass) say "$PEER: libvirtd with our packages, listening on tcp://$PEER:16509" ;;
        "not available") not_available "on $PEER: $reason" ;;
        *) fail "on $PEER: ${reason:-libvirt-peer.sh setup left no result}"; return 1 ;;
    esac
}
# KEY's value in the result line of record FILE
result_field() {
    awk -F'\t' -v k="$1=" '$1 == "result" { for (i = 2; i <= NF; i++) if (index($i, k) == 1) print substr($i, length(k) + 1) }' "$2"
}
# virsh's state of the guest on this host or (peer) on B
virsh_state() {
    local cmd="timeout 30 virsh -c xen:///system domstate $NAME 2>&1 | head -1"
    if [ "$1" = peer ]; then peer "$cmd"; else bash -c "$cmd"; fi
}

# virsh migrate --live from this host's libvirtd to B's: our helper must do
# the live save here and the restore there, each saying so in its libvirt's
# libxl log (this host's lines in SCENARIO.migrate.log, B's in
# SCENARIO.receive.log); the guest then runs on B under libvirt and no
# longer here.
cross_libvirt() {
    local rc state
    libvirt_setup || return 1
    peer_libvirt_setup || return 1
    libvirt_create || return 1
    conf_for migrate
    [ "$TYPE" = hvm ] && keep_serial "$NAME"
    libxl_mark
    # (--migrateuri: B's libvirtd listens for the stream on the link's
    # address, not on whatever its hostname resolves to)
    op migrate -- timeout $((LAB_TIMEOUT / 2)) "${VIRSH[@]}" migrate --live "$NAME" \
        "xen+tcp://$PEER/system" "tcp://$PEER"
    rc=$?
    libxl_lines migrate
    peer "cat $LIBXL_LOG $LIBVIRT_LOG_DIR/$NAME.log" >"$OUT/$SCENARIO.receive.libxl.log" 2>/dev/null
    libxl_rxmigrate_lines "$OUT/$SCENARIO.receive.libxl.log" >"$OUT/$SCENARIO.receive.log"
    [ $rc = 0 ] || return 1
    helper_line migrate version '^rxmigrate: rxmigrate-save-helper [0-9.]+ \(git [0-9a-f]+; Xen [0-9.]+'
    helper_line migrate live '^rxmigrate: live save of domain [0-9]+ with '
    helper_line migrate summary '^rxmigrate: save done, [a-z0-9+]+: [0-9]+ rounds'
    no_handover migrate
    helper_line receive version '^rxmigrate: rxmigrate-save-helper [0-9.]+ \(git [0-9a-f]+; Xen [0-9.]+'
    helper_line receive summary '^rxmigrate: restore done: [0-9]+ pages into domain [0-9]+'
    no_handover receive
    # shellcheck disable=SC2046
    rec stats "op=migrate" $(stats_fields "$OUT/$SCENARIO.migrate.stats.jsonl")
    state=$(virsh_state peer)
    check peer-libvirt-running "$([ "$state" = running ] && echo yes || echo no)" "virsh domstate $NAME on $PEER: $state"
    state=$(virsh_state here)
    check source-libvirt-inactive "$([ "$state" = "shut off" ] && echo yes || echo no)" "virsh domstate $NAME here: $state"
    check_moved migrate
}

cross_family() {
    peer_prepare || return
    # (libvirt's guest is libvirt's to create)
    [ "$FAMILY" = cross-libvirt ] && { cross_libvirt; return; }
    guest_create "$NAME" "$TYPE" || return
    case $FAMILY in
        cross-xl) cross_xl ;;
        cross-rx) cross_rx ;;
        cross-plugin) cross_plugin ;;
    esac
}

cross_cleanup() {
    [ "$FAMILY" = cross-plugin ] && plugin_uninstall
    if [ "$FAMILY" = cross-libvirt ]; then
        timeout 30 virsh -c xen:///system list --all >"$OUT/$SCENARIO.virsh-list.txt" 2>&1
        peer "timeout 30 virsh -c xen:///system list --all" >"$OUT/$SCENARIO.peer-virsh-list.txt" 2>&1
        libvirt_cleanup
        peer_libvirt cleanup >>"$OUT/$SCENARIO.cleanup.log" 2>&1
    fi
    [ -n "$PEER" ] && peer "xl destroy $NAME" >/dev/null 2>&1
    return 0
}
