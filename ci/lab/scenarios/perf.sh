# The side-by-side benchmark (sourced by scenario.sh for perf-TYPE): one
# running guest migrated to this host again and again, in turn by
#   stock           xl migrate with Xen's own libxl-save-helper
#   plugin-xen4     xl migrate with rxmigrate-save-helper, policy xen4 (the
#                   control: stock's algorithm, our code)
#   plugin-hotpage  xl migrate with rxmigrate-save-helper, policy hotpage
#   rx              rxmigrate migrate to rxmigrate receive (hotpage)
# and, when asked for (LAB_PERF_VARIANTS, ci/lab/run --perf-variants), any
#   plugin-POLICY   xl migrate with rxmigrate-save-helper, that policy (e.g.
#                   plugin-hotpage+ac: auto-converge)
#   rx-POLICY       rxmigrate migrate --policy POLICY (e.g. rx-hotpage+ac)
# LAB_PERF_K rounds (default 5), each from a freshly created guest: the xl
# variants in an order rotated each round, then rx (a domain rxmigrate
# receive built is not libxl's, so xl cannot migrate it on). Every variant
# is measured the same way:
#   bytes     counted in the pipe to the receiving command (count_relay)
#   total_s   the command's start to the destination domain running
#   downtime  dom0's clock: the source suspended to the destination running,
#             from Xen's domain flags polled every 5 ms (downtime_probe);
#             the guest's longest work-loop stall is kept as a second figure
#   cpu_s     CPU seconds of the whole migration (sender, receiver and all
#             they waited for) and of the receiving side alone
#   rounds    from rxmigrate's stats (not known for stock)
#   work      the guest's work rate from the start of the migration to its
#             first heartbeat on the destination, over its rate in the
#             seconds before (lab-work's ticks=): what a throttle cost it
# Our receivers' page-data times ({"restore": …} lines: the receiving helper
# appends to the sender's stats file, receive writes BASE.recv.jsonl) are
# tabulated by ci/lab/perf_times.py.
# One `perf` record line per migration; ci/lab/perf_report.py makes the table.

read -r -a PERF_VARIANTS <<<"${LAB_PERF_VARIANTS:-stock plugin-xen4 plugin-hotpage rx}"

# xl's verbosity in the xl variants: -vvv with --perf-xl-verbose (libxl's
# debug lines, e.g. the receiving side's device setup, in the log).
XL_V=()
[ "${LAB_PERF_XL_VERBOSE:-0}" = 1 ] && XL_V=(-vvv)

# stamp_lines: each line of stdin prefixed by dom0's clock when it arrived
# (seconds since the epoch, as the downtime probe's t0_epoch), so that a
# migration's log lines fall on the probe's suspend and resume times.
stamp_lines() {
    local l
    while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done
}

# perf_field FILE KEY: KEY's value in a line of key=value words.
perf_field() { tr ' ' '\n' <"$1" 2>/dev/null | sed -n "s/^$2=//p" | head -1; }

perf_once() {
    local v=$1 k=$2 base=$OUT/$SCENARIO.$1.$2 src pp start rc hb0 stall rounds=- recv i pol ac work
    src=$(xl domid "$NAME") || { fail "$v #$k: $NAME is gone"; return 1; }
    "$BIN/downtime_probe" "$src" "$LAB_TIMEOUT" >"$base.probe" 2>&1 &
    pp=$!
    sleep 1 # the probe's view of the domains before the migration
    hb0=$(heartbeat "$NAME")
    [ "$TYPE" = hvm ] && keep_serial "$NAME"
    rm -f "$base.stats.jsonl" "$base.recv.jsonl"
    start=$(date +%s.%N)
    case $v in
        stock)
            env -u LIBXL_SAVE_HELPER "$BIN/count_relay" "$base.whole" -- \
                xl "${XL_V[@]}" migrate -s "" "$NAME" \
                "$BIN/count_relay $base.relay -- xl ${XL_V[*]} migrate-receive"
            ;;
        plugin-*)
            LIBXL_SAVE_HELPER=$HELPER RXMIGRATE_FALLBACK=fail RXMIGRATE_POLICY=${v#plugin-} \
                RXMIGRATE_STATS=$base.stats.jsonl "$BIN/count_relay" "$base.whole" -- \
                xl "${XL_V[@]}" migrate -s "" "$NAME" \
                "$BIN/count_relay $base.relay -- xl ${XL_V[*]} migrate-receive"
            ;;
        rx | rx-*)
            pol=hotpage ac=()
            [ "$v" = rx ] || pol=${v#rx-}
            # NAME+ac: the CLI's --auto-converge
            [ "${pol%+ac}" = "$pol" ] || { pol=${pol%+ac} ac=(--auto-converge); }
            "$BIN/count_relay" "$base.whole" -- "$RX" --hv xen migrate "$NAME" \
                "$BIN/count_relay $base.relay -- $RX --hv xen receive --stats $base.recv.jsonl" -s "" \
                --policy "$pol" "${ac[@]}" --stats "$base.stats.jsonl"
            ;;
        *)
            echo "unknown perf variant $v (stock, plugin-POLICY, rx, rx-POLICY)"
            false
            ;;
    esac </dev/null 2>&1 | stamp_lines >"$base.log"
    rc=${PIPESTATUS[0]}
    # The probe ends at the destination's unpause; a migration that failed
    # before its suspend leaves it waiting: stop it after a grace period.
    for ((i = 0; i < 60; i++)); do
        kill -0 "$pp" 2>/dev/null || break
        sleep 0.5
    done
    kill "$pp" 2>/dev/null
    wait "$pp"
    if [ $rc != 0 ]; then
        tail -5 "$base.log" | sed 's/^/    | /'
        fail "$v #$k: migration exited $rc"
        return 1
    fi
    if ! grep -q downtime_ms= "$base.probe"; then
        fail "$v #$k: the downtime probe saw no switchover ($(cat "$base.probe"))"
        return 1
    fi
    check_alive "$NAME" "$hb0" "$v" || return 1
    read -r _ _ stall <<<"$(console_scan "$NAME" "$hb0")"
    work=$(work_ratio "$NAME" "$hb0")
    [ -s "$base.stats.jsonl" ] && rounds=$(stats_fields "$base.stats.jsonl" | tr '\t' '\n' | sed -n 's/^rounds=//p')
    recv=$(perf_field "$base.relay" child_cpu_s)
    rec perf "variant=$v" "k=$k" \
        "bytes=$(perf_field "$base.relay" bytes)" \
        "total_s=$(python3 -c 'import sys; a=sys.argv; print("%.3f" % (float(a[1]) + float(a[2]) - float(a[3])))' \
            "$(perf_field "$base.probe" t0_epoch)" "$(perf_field "$base.probe" resume_s)" "$start")" \
        "downtime_ms=$(perf_field "$base.probe" downtime_ms)" "guest_stall_ms=${stall:-0}" \
        "cpu_s=$(perf_field "$base.whole" child_cpu_s)" "recv_cpu_s=$recv" "rounds=${rounds:--}" \
        "work_ratio=${work:--}"
    say "$v #$k: $(cat "$base.probe"), $(cat "$base.relay")"
    # on the transfer disk for good: a boot that hangs later keeps this one
    sync
}

perf_family() {
    local k i v K=${LAB_PERF_K:-5} xlv=() rxv=()
    # A domain `rxmigrate receive` built is not libxl's: xl cannot migrate
    # it ("unable to retrieve domain configuration"). So the rx variants go
    # last in each round, and each round starts from a guest xl created,
    # warmed up alike; the variants rotate among their own kind.
    for v in "${PERF_VARIANTS[@]}"; do
        case $v in
            rx | rx-*) rxv+=("$v") ;;
            *) xlv+=("$v") ;;
        esac
    done
    need_rxmigrate
    need_helper
    [ -x "$BIN/count_relay" ] && [ -x "$BIN/downtime_probe" ] ||
        not_available "the lab's count_relay and downtime_probe were not built"
    rec meta "perf_k=$K" "variants=${PERF_VARIANTS[*]}"
    for ((k = 1; k <= K; k++)); do
        if [ $k -gt 1 ]; then destroy_checked "$NAME" || return; fi
        guest_create "$NAME" "$TYPE" || return
        perf_warm_up
        for ((i = 0; i < ${#xlv[@]}; i++)); do
            perf_once "${xlv[$(((i + k - 1) % ${#xlv[@]}))]}" "$k" || return
        done
        for ((i = 0; i < ${#rxv[@]}; i++)); do
            perf_once "${rxv[$(((i + k - 1) % ${#rxv[@]}))]}" "$k" || return
        done
    done
    destroy_checked "$NAME"
}

# The workload runs a few seconds before the first migration of a round
# (five heartbeats after the first: the baseline of the work ratio).
perf_warm_up() {
    local i hb
    for ((i = 0; i < 60; i++)); do
        hb=$(heartbeat "$NAME")
        [ "${hb:-0}" -ge 6 ] && return 0
        sleep 1
    done
}
