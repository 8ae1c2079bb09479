# shellcheck shell=bash
# shellcheck disable=SC2153 # NAME, TYPE, FILE, BIN come from scenario.sh and run.sh
# The `package` family (sourced by scenario.sh after installed.sh, whose
# checks it shares): the Debian packages from ci/package, installed with
# dpkg -i as a user would, and nothing else. `rxmigrate doctor` must say
# "not ready" with the CLI alone (Xen's helper in place) and "ready" with
# the plugin; then plain xl save, xl restore and xl migrate NAME localhost
# (ssh) through our helper; `apt-get remove rxmigrate-xl-plugin` must give
# back Xen's helper byte for byte, doctor say "not ready" again, and Xen's
# helper do the next save and restore.

DEBS=$BIN/debs
PKG_RX=$(ls "$DEBS"/rxmigrate_*.deb 2>/dev/null | head -1)
PKG_PLUGIN=$(ls "$DEBS"/rxmigrate-xl-plugin_*.deb 2>/dev/null | head -1)
PLUGIN_HELPER=/usr/lib/rxmigrate/rxmigrate-save-helper

package_cleanup() {
    dpkg --purge rxmigrate-xl-plugin rxmigrate >>"$OUT/$SCENARIO.cleanup.log" 2>&1
    rm -f "$CONF_AS_INSTALLED"
}

# rxmigrate doctor, expected to exit WANT (0 ready, 1 not); its table kept
# in OUT/SCENARIO.doctor-WHEN.log. Extra checks: the line of CHECK must
# start with MARK (✓ or ✗).
doctor() {
    local when=$1 want=$2 rc ok=no
    shift 2
    op "doctor-$when" -- bash -c 'rxmigrate doctor; echo "exit=$?"' >/dev/null
    rc=$(sed -n 's/^exit=//p' "$OUT/$SCENARIO.doctor-$when.log")
    [ "$rc" = "$want" ] && ok=yes
    check "doctor-$when" $ok "want exit $want, got $rc: $(grep -a -E '^(ready|not ready)' "$OUT/$SCENARIO.doctor-$when.log")"
    while [ $# -ge 2 ]; do
        local name=$1 mark=$2 line
        shift 2
        # (the marks are UTF-8, dom0's locale may be C: no single-character match)
        line=$(grep -a -m1 -E "^[^ ]+ $name:" "$OUT/$SCENARIO.doctor-$when.log")
        if [[ $line == "$mark $name:"* ]]; then
            check "doctor-$when-$name" yes "$line"
        else
            check "doctor-$when-$name" no "want $mark, got: ${line:-no line}"
        fi
    done
}

# Our helper at libxl's path, Xen's (unchanged: SHA) diverted beside it by
# the package.
package_layout() {
    [ "$(sha256 "$STOCK_PATH.stock")" = "$1" ] &&
        [ "$(dpkg-divert --listpackage "$STOCK_PATH")" = rxmigrate-xl-plugin ] &&
        [ "$(readlink "$STOCK_PATH")" = "$PLUGIN_HELPER" ]
}
# Xen's helper back, the diversion and our files gone (the CLI package and
# its conffile stay).
package_removed() {
    [ -z "$(diversions)" ] && [ ! -e "$STOCK_PATH.stock" ] && [ -f "$STOCK_PATH" ] &&
        [ ! -L "$STOCK_PATH" ] && [ ! -e "$PLUGIN_HELPER" ]
}

# Before any package: the .debs brought in, nothing in xl's environment that
# would point it at a helper, Xen's helper alone in place. Sets STOCK_SHA.
package_preflight() {
    local v
    [ -f "$PKG_RX" ] && [ -f "$PKG_PLUGIN" ] ||
        not_available "no .debs brought in (ci/package builds them into target/debian)"
    unset LIBXL_SAVE_HELPER
    for v in $(compgen -e | grep '^RXMIGRATE_'); do unset "$v"; done
    STOCK_SHA=$(sha256 "$STOCK_PATH")
    rec meta "stock_helper_sha256=$STOCK_SHA" "packages=${PKG_RX##*/} ${PKG_PLUGIN##*/}"
    check_that clean-before "Xen's helper, sha256 $STOCK_SHA; no diversion, .stock, $CONF" -- \
        stock_only
}

# Where man finds page $1 (section 1); a minbase dom0 has no man-db, and
# then the detail says that only the installed file was checked.
man_where() {
    if command -v man >/dev/null; then
        echo "man -w $1: $(man -w "$1" 2>&1)"
    else
        echo "/usr/share/man/man1/$1.1.gz installed (no man-db in this dom0 to ask)"
    fi
}

# dpkg -i of rxmigrate-xl-plugin (rxmigrate installed first): our helper at
# libxl's path, Xen's diverted beside it unchanged.
package_install_plugin() {
    op dpkg-i-plugin -- dpkg -i "$PKG_PLUGIN" || return 1
    cp "$CONF" "$CONF_AS_INSTALLED"
    check_that installed-layout "$STOCK_PATH -> $(readlink "$STOCK_PATH"); .stock sha256 $(sha256 "$STOCK_PATH.stock"); $(diversions)" -- \
        package_layout "$STOCK_SHA" || return 1
    check_that helper-man-page "$(man_where rxmigrate-save-helper)" -- \
        test -f /usr/share/man/man1/rxmigrate-save-helper.1.gz
}

# apt-get remove rxmigrate-xl-plugin: Xen's helper back, byte for byte.
package_remove_plugin() {
    cp "$CONF_AS_INSTALLED" "$CONF"
    op apt-remove -- apt-get remove -y rxmigrate-xl-plugin || return 1
    check_that stock-helper-restored "$STOCK_PATH sha256 $(sha256 "$STOCK_PATH") (was $STOCK_SHA)" -- \
        [ "$(sha256 "$STOCK_PATH")" = "$STOCK_SHA" ]
    check_that plugin-gone "dpkg-divert --list: '$(diversions)'; no .stock, no $PLUGIN_HELPER" -- \
        package_removed
}

package_sequence() {
    local shadow=✓
    package_preflight || return 1
    need_sshd || return 1
    # (optional for readiness: without it only PV live migration is refused)
    has_shadow_paging || shadow=✗

    # the CLI alone: doctor runs and says what is missing
    op dpkg-i-rxmigrate -- dpkg -i "$PKG_RX" || return 1
    doctor cli-only 1 xen ✓ privcmd ✓ libxenctrl ✓ shadow "$shadow" key ✓ config ✓ save-helper ✗
    check_that man-page "$(man_where rxmigrate-doctor)" -- \
        test -f /usr/share/man/man1/rxmigrate-doctor.1.gz

    package_install_plugin || return 1
    doctor installed 0 save-helper ✓ config ✓ memory ✓
    rec meta "save_helper=$(readlink -f "$STOCK_PATH")" "version=$(rxmigrate --version)"

    guest_create "$NAME" "$TYPE" || return 1
    plugin_save_restore rxmigrate-save-helper-package || return 1
    plugin_migrate || return 1

    package_remove_plugin || return 1
    doctor removed 1 save-helper ✗
    stock_save_restore || return 1

    op dpkg-purge -- dpkg --purge rxmigrate || return 1
    check_that purged "no $CONF, /etc/rxmigrate, /usr/bin/rxmigrate" -- \
        [ ! -e "$CONF" ] && [ ! -e /etc/rxmigrate ] && [ ! -e /usr/bin/rxmigrate ]
}
