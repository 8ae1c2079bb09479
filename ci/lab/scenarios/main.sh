#!/bin/bash
# The lab's payload in dom0 (started by run.sh on the transfer disk): runs
# each scenario under a time limit and records the dom0's facts.
#   main.sh SCENARIO...
# Environment: see lib.sh, plus LAB_TIMEOUT (seconds per scenario).
SCEN_DIR=$(cd "$(dirname "$0")" && pwd)
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p "$OUT"
{
    xl info
    echo
    cat /proc/cmdline
    echo
    ls -l /usr/lib/x86_64-linux-gnu/libxen*.so* /usr/lib/xen-*/bin/
    echo
    [ -x "$BIN/rxmigrate" ] && ldd "$BIN/rxmigrate"
} >"$OUT/dom0-facts.txt" 2>&1
echo "LAB-FACTS $(xl info | awk -F' *: ' '/^(xen_version|virt_caps|nr_cpus) / { gsub(" ", ",", $2); printf "%s=%s ", $1, $2 }')"

# A line on the console every 60 s while the payload runs: the host stops a
# boot whose console stays silent (ci/lab/run --stall), and a long, quiet
# migration must not look like a hung lab.
tick() {
    # (sleep not on the pipe: a killed tick must not hold the console open)
    while sleep 60 </dev/null >/dev/null 2>&1; do
        echo "LAB-TICK $(cat /run/lab-scenario 2>/dev/null) up $(cut -d' ' -f1 /proc/uptime)s"
    done
}
tick &
ticker=$!
# Test of the host's watchdog (LAB_STALL_TEST=SECS in ci/lab/run's
# environment): the first boot goes silent, no tick, for SECS seconds.
if [ -n "${LAB_STALL_TEST:-}" ] && [ "${LAB_ATTEMPT:-1}" = 1 ]; then
    echo "LAB-STALL-TEST silent for $LAB_STALL_TEST s"
    kill $ticker
    sleep "$LAB_STALL_TEST"
    tick &
    ticker=$!
fi

for s in "$@"; do
    echo "$s" >/run/lab-scenario
    echo "LAB-SCENARIO start $s"
    t=$(date +%s)
    SCENARIO=$s timeout -k 30 "$LAB_TIMEOUT" bash "$SCEN_DIR/scenario.sh" "$s"
    rc=$?
    if [ $rc = 124 ] || [ $rc = 137 ] || [ ! -s "$OUT/$s.json" ]; then
        # the record so far, with the reason it has no result
        reason="no result: scenario exited $rc"
        [ $rc = 124 ] || [ $rc = 137 ] && reason="timed out after ${LAB_TIMEOUT}s"
        printf 'result\tstatus=fail\treason=%s\ttotal_s=%s\n' "$reason" "$(($(date +%s) - t))" \
            >>"$OUT/$s.rec"
        python3 "$SCEN_DIR/report.py" "$OUT/$s.rec" >"$OUT/$s.json"
        for d in $(xl list | awk 'NR > 2 { print $1 }'); do xl destroy "$d"; done
    fi
    # a libvirtd left by a libvirt-TYPE scenario killed in the middle
    for p in $(pgrep -x libvirtd) $(pgrep -x virtlogd); do kill "$p"; done
    # an installed rxmigrate-save-helper left behind (a scenario killed in
    # the middle) must not quietly serve the scenarios after it
    if dpkg -s rxmigrate-xl-plugin >/dev/null 2>&1 || dpkg -s rxmigrate >/dev/null 2>&1; then
        echo "LAB-WARN $s left the rxmigrate packages installed: purging them"
        dpkg --purge rxmigrate-xl-plugin rxmigrate
    fi
    if ls /usr/lib/xen-*/bin/libxl-save-helper.stock >/dev/null 2>&1 && [ -x "$BIN/install.sh" ]; then
        echo "LAB-WARN $s left rxmigrate-save-helper installed: uninstalling it"
        "$BIN/install.sh" uninstall
        rm -f /etc/rxmigrate.conf
    fi
    echo "LAB-SCENARIO end $s status=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["status"])' "$OUT/$s.json" | tr ' ' _) secs=$(($(date +%s) - t))"
done
kill $ticker
xl dmesg >"$OUT/xen-dmesg.txt" 2>&1
cp /var/log/xen/console/*.log* /var/log/xen/*.log "$OUT/" 2>/dev/null
mkdir -p "$OUT/consoles"
mv "$OUT"/guest-*.log* "$OUT/consoles/" 2>/dev/null
echo "LAB-DONE"
