#!/usr/bin/env bash
# Zero-downtime binary upgrade of tollgate running under systemd.
#
#   tollgate-upgrade.sh [NEW_BINARY]     (as root)
#
# Installs NEW_BINARY as /usr/local/bin/tollgate (or, without an argument,
# upgrades to the binary already installed there), then asks the running
# service to hand its listening sockets to a process of the new binary.
#
# How (Pingora's graceful upgrade, adapted to systemd without daemon mode):
# 1. This script validates the config with the new binary, installs it with
#    an atomic rename, drops a request file into /run/tollgate and runs
#    `systemctl reload tollgate`.
# 2. The unit's last ExecReload= step runs this script with --exec-reload,
#    inside the service: same user, sandbox and cgroup as the gateway. It
#    starts `<same command line> -u` (the new process waits on
#    server.upgrade_sock for the sockets), sends SIGQUIT to the old process
#    (which passes the sockets over and drains for grace_period_seconds),
#    and writes the new PID to the unit's PIDFile=.
# 3. systemd re-reads PIDFile= when the reload finishes, so MainPID is now
#    the new process; the old one exits on its own after draining.
# The listening sockets are never closed: connections queue in the kernel
# while they change hands, so no client sees a refused connection.
#
# Environment: TOLLGATE_UNIT (default tollgate.service),
# TOLLGATE_BIN (default /usr/local/bin/tollgate),
# TOLLGATE_CONFIG (default /etc/tollgate/tollgate.yaml).
set -euo pipefail

UNIT="${TOLLGATE_UNIT:-tollgate.service}"
BIN="${TOLLGATE_BIN:-/usr/local/bin/tollgate}"
CONFIG="${TOLLGATE_CONFIG:-/etc/tollgate/tollgate.yaml}"
RUN_DIR=/run/tollgate
REQUEST="$RUN_DIR/upgrade.request"
HANDED_OVER="$RUN_DIR/upgrade.handed-over"   # exists once the old process got SIGQUIT
PID_FILE="$RUN_DIR/tollgate.pid"

log() { printf 'tollgate-upgrade: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- inside the service (ExecReload=) ---------------------------------------
exec_reload() {
    # A plain `systemctl reload` has no request: nothing to do.
    [ -e "$REQUEST" ] || exit 0
    local sock
    sock="$(head -n 1 "$REQUEST" 2>/dev/null || true)"
    rm -f "$REQUEST"

    local old="${MAINPID:?MAINPID not set: run by systemd only}"
    [ -r "/proc/$old/cmdline" ] || die "main process $old is gone"
    local -a argv=()
    mapfile -d '' argv < "/proc/$old/cmdline"
    [ "${#argv[@]}" -gt 0 ] || die "cannot read the command line of $old"
    # Note: argv[0] is the path systemd executed: after an install it names
    # the new binary, while the old process keeps running its old inode.

    # The new process binds the upgrade socket and waits (about 5 s) for the
    # sockets; remove any stale socket file so that its appearance means
    # "listening".
    [ -n "$sock" ] && rm -f "$sock"
    "${argv[@]}" -u </dev/null &
    local new=$!
    log "started ${argv[*]} -u as PID $new"

    local i
    for i in $(seq 1 30); do
        kill -0 "$new" 2>/dev/null || die "new process $new exited during start-up (see the journal); old process $old keeps serving"
        if [ -n "$sock" ] && [ -S "$sock" ]; then break; fi
        if [ -z "$sock" ] && [ "$i" -ge 10 ]; then break; fi
        sleep 0.1
    done
    [ -z "$sock" ] || [ -S "$sock" ] || { kill -TERM "$new" 2>/dev/null || true; die "new process never listened on $sock; old process $old keeps serving"; }

    echo "$new" > "$PID_FILE"
    echo "$old $new" > "$HANDED_OVER"
    kill -QUIT "$old"
    log "SIGQUIT sent to $old: it hands its sockets to $new and drains"

    # The hand-over takes well under a second; make sure the new process
    # survived it before reporting success.
    sleep 2
    kill -0 "$new" 2>/dev/null || die "new process $new died after the hand-over (see the journal)"
    exit 0
}

# --- the operator's side (root) ---------------------------------------------
# Value of a top-level `server:` key in the YAML file (plain scalars only).
server_field() {
    awk -v key="$1" '
        /^[^[:space:]#]/ { in_server = ($0 ~ /^server:/) }
        in_server && $0 ~ "^[[:space:]]+" key ":" {
            sub("^[[:space:]]+" key ":[[:space:]]*", ""); sub(/[[:space:]]+#.*$/, "")
            gsub(/^["\047]|["\047]$/, ""); print; exit
        }' "$CONFIG"
}

main_pid() { systemctl show -p MainPID --value "$UNIT"; }

operator() {
    [ "$(id -u)" -eq 0 ] || die "run as root"
    systemctl is-active --quiet "$UNIT" || die "$UNIT is not running (start it instead: systemctl start $UNIT)"

    local new_bin="${1:-}"
    if [ -n "$new_bin" ]; then
        [ -x "$new_bin" ] || die "$new_bin is not an executable file"
        log "new binary: $("$new_bin" --version)"
        "$new_bin" check -c "$CONFIG" || die "the new binary rejects $CONFIG; nothing changed"
        install -m 0755 "$new_bin" "$BIN.new"
        mv -f "$BIN.new" "$BIN"          # atomic: the running process keeps its inode
        log "installed $BIN"
    else
        log "upgrading to the installed $BIN: $("$BIN" --version)"
        "$BIN" check -c "$CONFIG" || die "$BIN rejects $CONFIG; nothing changed"
    fi

    local sock old new
    sock="$(server_field upgrade_sock)"
    [ -n "$sock" ] || log "warning: server.upgrade_sock is not set in $CONFIG; set it to $RUN_DIR/upgrade.sock"
    old="$(main_pid)"
    rm -f "$HANDED_OVER"
    printf '%s\n' "$sock" > "$REQUEST"
    chown "$(stat -c %U "$RUN_DIR")" "$REQUEST"   # the service removes it

    log "handing over from PID $old (systemctl reload $UNIT)"
    if ! systemctl reload "$UNIT"; then
        rm -f "$REQUEST"
        if [ ! -e "$HANDED_OVER" ] && systemctl is-active --quiet "$UNIT" && [ "$(main_pid)" = "$old" ]; then
            die "upgrade refused before the hand-over; PID $old keeps serving (journalctl -u $UNIT)"
        fi
        # The old process was told to quit but the new one did not survive:
        # nothing would be serving once the old one has drained.
        log "hand-over failed after SIGQUIT: restarting $UNIT on $BIN"
        systemctl restart "$UNIT"
        die "upgrade failed; $UNIT was restarted (short interruption; journalctl -u $UNIT)"
    fi
    new="$(main_pid)"
    [ "$new" != "$old" ] && [ "$new" != 0 ] || die "MainPID did not change (still $old); see journalctl -u $UNIT"

    # The old process drains for grace_period_seconds after the hand-over.
    local i
    for i in $(seq 1 60); do
        kill -0 "$old" 2>/dev/null || break
        sleep 0.5
    done
    kill -0 "$old" 2>/dev/null && log "note: old PID $old is still draining"
    systemctl is-active --quiet "$UNIT" || die "$UNIT is not active after the upgrade"
    log "done: $UNIT now runs PID $new ($("$BIN" --version))"
}

case "${1:-}" in
    --exec-reload) exec_reload ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) operator "$@" ;;
esac
