#!/usr/bin/env bash
# What each part of tollgate's per-request work costs under load, on the
# plain route (issue 9: "policy for free on plain routes").
#
# The same GET through: a bare Pingora hop (`tollgate bare-proxy`, the
# baseline); the bare hop writing the contract's request and answer headers
# (`bare-proxy --contract-headers`: tollgate's header functions, fixed
# values, no policy); tollgate with the shipped config (every policy on, as in
# load.sh); tollgate with a minimal config (one API key, one route: no
# RBAC beyond one role, no owner rule, no rate limit, no budgets, no
# health checks); and the minimal config with parts of the per-request work
# switched off by a bench-only build (`--features bench-tools`,
# src/dev/ablation.rs): the head deadline read, the upstream headers, the
# answer headers, logging + metrics, request ids, and all of them.
# For each target: CPU µs per request of the serving process (user + system,
# all threads, over the run / requests), the steadier figure on this shared
# VM, and req/s at -c CONNS; medians of ROUNDS interleaved rounds.
#
#   bash benches/ablation.sh                       # 5 rounds x 5 s per target (~5 min + builds)
#   ROUNDS=3 DURATION=3 SKIP_BUILD=1 bash benches/ablation.sh
#   TARGETS="no-headers none-of-these" bash benches/ablation.sh   # bare, minimal and these
#
# SKIP_BUILD=1 uses target/release/tollgate and target/release/tollgate-ablation
# as they are. Needs nginx, wrk, curl, python3. Loopback only; bounded; every
# process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
CONNS=${CONNS:-32}
THREADS=2
BIN=target/release/tollgate
ABL=target/release/tollgate-ablation
for tool in nginx wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 1; }
done
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  # The feature changes only this crate: both builds stay cached side by
  # side, and the product build is restored last.
  cargo build --release --locked --quiet --features bench-tools
  cp target/release/tollgate "$ABL"
  cargo build --release --locked --quiet
fi
[ -x "$BIN" ] && [ -x "$ABL" ] || { echo "missing $BIN or $ABL (build without SKIP_BUILD=1)" >&2; exit 1; }

. benches/common.sh
bench_start tollgate-ablation

KEY=tollgate-bench-key
KEY_SHA=$(sha "$KEY")
JSON=$(port); SSE=$(port)
python3 benches/load_setup.py nginx "$WORK/nginx.conf" --work "$WORK" --json-port "$JSON" --sse-port "$SSE"
nginx -p "$WORK" -e "$WORK/nginx-error.log" -c "$WORK/nginx.conf" >"$WORK/nginx.out" 2>&1 & PIDS+=($!)

declare -A PORT PID SKIP
# name -> parts skipped (src/dev/ablation.rs names); "" = none.
SKIP=([minimal]="" [no-head]="head" [no-up-headers]="upstream-headers"
      [no-ans-headers]="answer-headers" [no-headers]="upstream-headers,answer-headers"
      [no-logging]="logging" [no-ids]="ids" [none-of-these]="all")
ORDER=(bare bare-headers shipped minimal no-head no-up-headers no-ans-headers no-headers no-logging no-ids none-of-these)
if [ -n "${TARGETS:-}" ]; then read -ra ORDER <<<"bare minimal $TARGETS"; fi  # e.g. TARGETS="bare-headers no-headers"
PORT[bare]=$(port)
"$ABL" bare-proxy --listen 127.0.0.1:"${PORT[bare]}" --upstream 127.0.0.1:"$JSON" --threads "$THREADS" >"$WORK/bare.out" 2>&1 & PID[bare]=$!; PIDS+=($!)
if [[ " ${ORDER[*]} " == *" bare-headers "* ]]; then
  PORT[bare-headers]=$(port)
  "$ABL" bare-proxy --contract-headers --listen 127.0.0.1:"${PORT[bare-headers]}" --upstream 127.0.0.1:"$JSON" --threads "$THREADS" >"$WORK/bare-headers.out" 2>&1 & PID[bare-headers]=$!; PIDS+=($!)
fi

PORT[shipped]=$(port)
IDENTITY=$(python3 benches/load_setup.py gateway conf/tollgate.yaml "$WORK/shipped.yaml" \
  --listen "${PORT[shipped]}" --admin "$(port)" --json-port "$JSON" --sse-port "$SSE" \
  --work "$WORK" --name shipped --access-log off --key-sha256 "$KEY_SHA")
USER_ID=$(sed -E 's/^user=([^ ]+).*/\1/' <<<"$IDENTITY")
if [[ " ${ORDER[*]} " == *" shipped "* ]]; then  # its config also gives the bench user
  "$BIN" run -c "$WORK/shipped.yaml" >"$WORK/shipped.out" 2>&1 & PID[shipped]=$!; PIDS+=($!)
fi

minimal_config() { # name listen-port -> $WORK/name.yaml
  cat >"$WORK/$1.yaml" <<EOF
server:
  listen: ["127.0.0.1:$2"]
  admin_listen: "127.0.0.1:$(port)"
  threads: $THREADS
  grace_period_seconds: 0
  upgrade_sock: $WORK/$1-upgrade.sock
  pid_file: $WORK/$1.pid
auth:
  api_keys:
    - { id: bench-1, sha256: "$KEY_SHA", user: $USER_ID, tenant: acme, roles: [agent] }
upstreams:
  support: { peers: ["127.0.0.1:$JSON"] }
routes:
  - { name: agent-tickets, path: "/api/v1/agents/{agent}/tickets", methods: [GET], upstream: support, roles: [agent] }
store: { kind: local, path: $WORK/$1-usage.db }
observability: { access_log: "off" }
EOF
}
for name in "${ORDER[@]}"; do
  [ -n "${SKIP[$name]+set}" ] || continue  # bare, bare-headers and shipped are started above
  PORT[$name]=$(port)
  minimal_config "$name" "${PORT[$name]}"
  TOLLGATE_BENCH_SKIP="${SKIP[$name]}" "$ABL" run -c "$WORK/$name.yaml" >"$WORK/$name.out" 2>&1 & PID[$name]=$!; PIDS+=($!)
done
for name in "${ORDER[@]}"; do wait_port "${PORT[$name]}"; done
sleep 0.5

GET_PATH="/api/v1/agents/$USER_ID/tickets"
for name in "${ORDER[@]}"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "X-API-Key: $KEY" "http://127.0.0.1:${PORT[$name]}$GET_PATH")
  [ "$code" = 200 ] || { echo "check failed: $name answered $code" >&2; exit 1; }
done

measure() { # name -> "req/s cpu_us_per_req" appended to $WORK/name.runs
  local name=$1 t0 t1 out req rps
  t0=$(cpu_ticks "${PID[$1]}")
  out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "X-API-Key: $KEY" "http://127.0.0.1:${PORT[$name]}$GET_PATH")
  t1=$(cpu_ticks "${PID[$1]}")
  req=$(awk '/requests in/ { print $1 }' <<<"$out")
  rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
  if grep -q 'Non-2xx' <<<"$out"; then echo "$name: non-2xx answers under load" >&2; exit 1; fi
  echo "$rps $(cpu_us_per_req "$t0" "$t1" "$req")" >>"$WORK/$name.runs"
}
echo "ablation: ${ROUNDS} rounds x ${DURATION}s per target, wrk -t1 -c$CONNS, nginx upstream; $(date -u +%Y-%m-%dT%H:%M:%SZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
  if (( r % 2 )); then targets=("${ORDER[@]}"); else targets=(); for ((i=${#ORDER[@]}-1; i>=0; i--)); do targets+=("${ORDER[$i]}"); done; fi
  for name in "${targets[@]}"; do measure "$name"; done
done

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
BARE_CPU=$(cut -d' ' -f2 "$WORK/bare.runs" | median)
MIN_CPU=$(cut -d' ' -f2 "$WORK/minimal.runs" | median)
printf '%-15s %9s %11s %10s %12s   %s\n' target req/s "CPU µs/req" "vs bare" "vs minimal" "CPU µs/req per round"
for name in "${ORDER[@]}"; do
  rps=$(cut -d' ' -f1 "$WORK/$name.runs" | median)
  cpu=$(cut -d' ' -f2 "$WORK/$name.runs" | median)
  awk -v n="$name" -v rps="$rps" -v c="$cpu" -v b="$BARE_CPU" -v m="$MIN_CPU" -v rounds="$(cut -d' ' -f2 "$WORK/$name.runs" | tr '\n' ' ')" \
    'BEGIN { vm = (n ~ /^bare/ || n == "shipped") ? "-" : sprintf("%+.1f", c - m)
            printf "%-15s %9.0f %11.1f %+10.1f %12s   %s\n", n, rps, c, c - b, vm, rounds }'
done
echo "bare-headers = the bare hop writing the same headers (bare-proxy --contract-headers); skipped parts: no-head = the head deadline read; no-up-headers = identity/trace/forwarding headers upstream; no-ans-headers = request id/rate-limit/Server-Timing on the answer; no-headers = both; no-logging = metrics/access log/span; no-ids = request id + traceparent; none-of-these = all five (src/dev/ablation.rs)"
