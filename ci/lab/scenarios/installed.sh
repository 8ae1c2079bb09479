# shellcheck shell=bash
# shellcheck disable=SC2153 # NAME, TYPE, FILE, BIN come from scenario.sh and run.sh
# The `installed` family (sourced by scenario.sh): rxmigrate-save-helper put
# in place of Xen's helper by xl-plugin/install.sh, then plain `xl save`,
# `xl restore` and `xl migrate NAME localhost` (through ssh, so both ends are
# fresh xl processes that find the helper at libxl's compiled-in path) with
# no LIBXL_SAVE_HELPER anywhere; then `install.sh uninstall`, which must leave
# Xen's helper exactly as it was, and one more save and restore by Xen's own
# helper.

INSTALL_SH=$BIN/install.sh
STOCK_PATH=$XEN_LIB/bin/libxl-save-helper
CONF=/etc/rxmigrate.conf
# the conf as install.sh wrote it: put back before uninstall, which removes
# it only when it is unchanged
CONF_AS_INSTALLED=$SAVE_DIR/rxmigrate.conf.as-installed

# check NAME DETAIL -- COMMAND...: ok when COMMAND succeeds
check_that() {
    local name=$1 detail=$2
    shift 3
    if "$@"; then check "$name" yes "$detail"; else check "$name" no "$detail"; fi
}

# sshd on demand: only the scenarios that migrate over ssh pay for it.
need_sshd() {
    [ -x /usr/sbin/sshd ] || not_available "no sshd in this lab image (rebuild it: ci/lab/build)"
    if ! { [ -s /run/sshd.pid ] && kill -0 "$(cat /run/sshd.pid)" 2>/dev/null; }; then
        mkdir -p /run/sshd
        op sshd -- /usr/sbin/sshd || return 1
    fi
    # what the receiver of `xl migrate NAME localhost` will get: a login
    # without prompt, with xl on its PATH
    # shellcheck disable=SC2016 # expanded by the remote shell
    op ssh-localhost -- ssh localhost 'echo "$(id -un)@$(hostname) PATH=$PATH xl=$(command -v xl)"; command -v xl >/dev/null'
}

sha256() { sha256sum "$1" 2>/dev/null | cut -d' ' -f1; }
diversions() { dpkg-divert --list 2>/dev/null | grep -a libxl-save-helper; }
# Xen's helper in place and nothing of ours: before install, after uninstall
stock_only() {
    [ -z "$(diversions)" ] && [ ! -e "$STOCK_PATH.stock" ] && [ ! -e "$CONF" ] &&
        [ ! -e /usr/local/lib/rxmigrate ] && [ -f "$STOCK_PATH" ] && [ ! -L "$STOCK_PATH" ]
}
# our helper at libxl's path, Xen's (unchanged: SHA) diverted beside it
installed_layout() {
    [ "$(sha256 "$STOCK_PATH.stock")" = "$1" ] && [ -n "$(diversions)" ] &&
        [ -L "$STOCK_PATH" ] && cmp -s "$(readlink -f "$STOCK_PATH")" "$HELPER"
}

# install.sh status, expected to say WANT (rxmigrate | stock).
install_status() {
    local want=$1 when=$2 out rc ok=no
    out=$("$INSTALL_SH" status 2>&1)
    rc=$?
    echo "$out" >"$OUT/$SCENARIO.status-$when.log"
    case $want in
        rxmigrate) [ $rc = 0 ] && grep -q ": rxmigrate (" <<<"$out" && ok=yes ;;
        stock) [ $rc = 1 ] && grep -q "Xen's own helper" <<<"$out" && ! grep -q rxmigrate <<<"$out" && ok=yes ;;
    esac
    check "status-$when" $ok "want $want; rc=$rc: $(tr '\n' ' ' <<<"$out")"
}

# The installed conf plus the lab's settings: no hand-over to Xen's helper
# (it would pass as ours), and rxmigrate's statistics per operation.
conf_for() {
    {
        cat "$CONF_AS_INSTALLED"
        echo "# added by the lab scenario $SCENARIO"
        echo "fallback = fail"
        echo "stats = $OUT/$SCENARIO.$1.stats.jsonl"
    } >"$CONF"
}

# The first helper log line of OP matching PATTERN (ERE), as a check.
helper_line() {
    local op=$1 what=$2 pattern=$3 line
    line=$(grep -a -m1 -E "$pattern" "$OUT/$SCENARIO.$op.log")
    if [ -n "$line" ]; then check "$op-$what" yes "$line"; else check "$op-$what" no "no line matching /$pattern/ in $SCENARIO.$op.log"; fi
}
no_handover() {
    local op=$1 line
    line=$(grep -a -m1 -E 'handing over to the stock helper|^rxmigrate: (error|warning)' "$OUT/$SCENARIO.$op.log")
    if [ -z "$line" ]; then check "$op-no-handover" yes "no hand-over or error from rxmigrate"; else check "$op-no-handover" no "$line"; fi
}
no_rxmigrate() {
    local op=$1 line
    line=$(grep -a -m1 'rxmigrate' "$OUT/$SCENARIO.$op.log")
    if [ -z "$line" ]; then check "$op-stock-helper" yes "no rxmigrate line: Xen's helper did it"; else check "$op-stock-helper" no "rxmigrate after uninstall: $line"; fi
}

# Leave dom0 as it was even when a step failed: the scenarios after this
# one in the same boot must get Xen's helper.
installed_cleanup() {
    if [ -e "$XEN_LIB/bin/libxl-save-helper.stock" ] || [ -L "$STOCK_PATH" ]; then
        [ -f "$CONF_AS_INSTALLED" ] && cp "$CONF_AS_INSTALLED" "$CONF"
        "$INSTALL_SH" uninstall >>"$OUT/$SCENARIO.cleanup.log" 2>&1
    fi
    rm -f "$CONF_AS_INSTALLED"
}

installed_save() { # OP: xl save, the file recorded and verified
    local op=$1 writer=$2
    [ "$TYPE" = hvm ] && keep_serial "$NAME"
    op "$op" -- xl save "$NAME" "$FILE" || return 1
    rec file "op=$op" "bytes=$(file_bytes "$FILE")" "writer=$writer"
    verify_file "$op" "$FILE"
}
installed_restore() { # OP: xl restore of FILE, then the guest must live
    local op=$1 hb0
    # (baseline once the saved guest is gone, as xl_restore does)
    hb0=$(heartbeat "$NAME")
    op "$op" -- xl restore "$FILE" || return 1
    rm -f "$FILE"
    check_alive "$NAME" "$hb0" "$op"
}

# The steps installed-TYPE and package-TYPE share, once the helper is in
# place of Xen's and guest NAME runs.
#
# xl save (never live: xl suspends the guest first) and xl restore by our
# helper (WRITER names the way it was installed in the record).
plugin_save_restore() {
    local writer=$1
    conf_for save
    installed_save save "$writer" || return 1
    helper_line save version '^rxmigrate: info: rxmigrate-save-helper [0-9.]+ \(git [0-9a-f]+; Xen [0-9.]+'
    helper_line save ran '^rxmigrate: info: non-live save of domain [0-9]+'
    helper_line save summary '^rxmigrate: info: save done, non-live: [0-9]+ rounds'
    no_handover save
    # shellcheck disable=SC2046
    rec stats "op=save" $(stats_fields "$OUT/$SCENARIO.save.stats.jsonl")

    installed_restore restore || return 1
    helper_line restore summary '^rxmigrate: info: restore done: [0-9]+ pages into domain [0-9]+'
    no_handover restore
}

# xl migrate to localhost through ssh: the sender's helper runs the live save
# with the hot-page policy, the receiver's (xl migrate-receive under sshd,
# its stderr passed back by ssh) the restore. A PV guest on a Xen without
# shadow paging: our helper must refuse it, with no hand-over to Xen's.
plugin_migrate() {
    local hb0 domid_before domid_after
    conf_for migrate
    hb0=$(heartbeat "$NAME")
    domid_before=$(xl domid "$NAME")
    [ "$TYPE" = hvm ] && keep_serial "$NAME"
    if live_pv_unsupported; then
        op_refused migrate "$REFUSAL_RX" -- xl migrate "$NAME" localhost || return 1
        # (the refusal is an rxmigrate error line: only the hand-over counts here)
        if grep -aq 'handing over to the stock helper' "$OUT/$SCENARIO.migrate.log"; then
            check migrate-no-handover no "handed over to Xen's helper"
        else
            check migrate-no-handover yes "refused without a hand-over to Xen's helper"
        fi
        # (a failed check fails the scenario; the steps after it still run)
        return 0
    fi
    op migrate -- xl migrate "$NAME" localhost || return 1
    hb0=$(heartbeat "$NAME")
    domid_after=$(xl domid "$NAME")
    helper_line migrate sender-policy "^rxmigrate: info: live save of domain $domid_before with policy hotpage "
    helper_line migrate sender-summary '^rxmigrate: info: save done, hotpage: [0-9]+ rounds'
    helper_line migrate receiver "^rxmigrate: info: restore done: [0-9]+ pages into domain $domid_after "
    no_handover migrate
    # shellcheck disable=SC2046
    rec stats "op=migrate" $(stats_fields "$OUT/$SCENARIO.migrate.stats.jsonl")
    check_alive "$NAME" "$hb0" migrate
}

# Xen's own helper back in place: a save and a restore with no rxmigrate line.
stock_save_restore() {
    installed_save save-stock xl || return 1
    no_rxmigrate save-stock
    installed_restore restore-stock || return 1
    no_rxmigrate restore-stock
}

installed_sequence() {
    local stock_sha v
    need_helper
    [ -x "$INSTALL_SH" ] || not_available "install.sh was not brought in"
    # Nothing may point xl at the helper but the installation itself.
    unset LIBXL_SAVE_HELPER
    for v in $(compgen -e | grep '^RXMIGRATE_'); do unset "$v"; done
    need_sshd || return 1

    stock_sha=$(sha256 "$STOCK_PATH")
    rec meta "stock_helper_sha256=$stock_sha"
    check_that clean-before "Xen's helper, sha256 $stock_sha; no diversion, .stock, $CONF" -- \
        stock_only || return 1
    install_status stock before || return 1

    op install -- "$INSTALL_SH" install --binary "$HELPER" || return 1
    cp "$CONF" "$CONF_AS_INSTALLED"
    install_status rxmigrate installed || return 1
    check_that installed-layout "$STOCK_PATH -> $(readlink "$STOCK_PATH"); .stock sha256 $(sha256 "$STOCK_PATH.stock"); $(diversions)" -- \
        installed_layout "$stock_sha" || return 1
    rec meta "save_helper=$(readlink -f "$STOCK_PATH")"

    guest_create "$NAME" "$TYPE" || return 1

    plugin_save_restore rxmigrate-save-helper-installed || return 1
    plugin_migrate || return 1

    # uninstall: Xen's helper back, byte for byte, and nothing of ours left
    cp "$CONF_AS_INSTALLED" "$CONF"
    op uninstall -- "$INSTALL_SH" uninstall || return 1
    install_status stock uninstalled
    check_that stock-helper-restored "$STOCK_PATH sha256 $(sha256 "$STOCK_PATH") (was $stock_sha)" -- \
        [ "$(sha256 "$STOCK_PATH")" = "$stock_sha" ]
    check_that nothing-left "dpkg-divert --list: '$(diversions)'; no .stock, /usr/local/lib/rxmigrate, $CONF" -- \
        stock_only

    # and Xen's own helper does the next save and restore
    stock_save_restore
}
