# Helpers shared by the bench scripts; sourced (`. benches/common.sh`) from
# the repository root, after `set -euo pipefail`. Every process a script
# starts goes into PIDS; `bench_start WORKDIR_PREFIX` makes $WORK and
# arranges for both to be cleaned up on exit.

PIDS=()

# Stops every process in PIDS: SIGTERM (background jobs of a script ignore
# SIGINT): nginx and redis exit at once, Pingora after its grace period;
# SIGKILL what lingers after 3 s. Then removes $WORK.
stop_all() {
  local p alive
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 30); do
    alive=0
    for p in "${PIDS[@]}"; do  # an exited child stays a zombie until `wait`
      grep -qs '^State:[[:space:]]*[^Z]' "/proc/$p/status" && alive=1
    done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  # bash reports a job it SIGKILLed ("Killed") on stderr: nothing to say here.
  { for p in "${PIDS[@]}"; do kill -KILL "$p" || true; done; wait || true; } 2>/dev/null
  rm -rf "${WORK:-}"
}

bench_start() { # prefix -> WORK=/tmp/prefix.XXXXXX, stop_all on exit
  WORK=$(mktemp -d "/tmp/$1.XXXXXX")
  trap stop_all EXIT
  trap 'exit 130' INT TERM
}

# A free loopback port (the OS picks; a race with other processes is possible
# but harmless on a bench machine: the start-up check would fail loudly).
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
# Waits for 127.0.0.1:PORT to accept, up to TENTHS tenths of a second (default 100).
wait_port() {
  for _ in $(seq "${2:-100}"); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "port $1 never opened" >&2; exit 1
}
sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
# User + system CPU time of PID (all its threads) in clock ticks; 0 without a PID.
cpu_ticks() { if [ -n "${1:-}" ]; then awk '{ print $14 + $15 }' "/proc/$1/stat"; else echo 0; fi; }
CLK_TCK=$(getconf CLK_TCK)
# CPU µs per request from two cpu_ticks readings around REQUESTS requests.
cpu_us_per_req() { awk -v d="$(($2 - $1))" -v r="$3" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", d * 1e6 / hz / r }'; }
