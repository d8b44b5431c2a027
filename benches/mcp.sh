#!/usr/bin/env bash
# MCP tools/call through tollgate vs direct to the server (issue 28), same
# run: the mock backend's support-tools MCP server (`tollgate mock-backend`,
# /mcp) behind one tollgate with a `kind: mcp` route (per-tool rules, owner
# rule on the called tool, audit line and metric per call). One `tools/call`
# of list_agent_tickets (owner rule checked) per request, answered as JSON
# and as an SSE stream (`x-mock-mcp-sse: 1`), each at ONE connection for
# p50/p99 latency (wrk --latency) and at CONNS connections for req/s, in
# ROUNDS interleaved rounds; medians reported with the added latency.
#
#   BIN=/tmp/tollgate-mcp bash benches/mcp.sh          # 3 rounds x 5 s per target
#   ROUNDS=1 DURATION=2 SKIP_BUILD=1 bash benches/mcp.sh
#
# Needs wrk and python3. Loopback only; every process started here is
# stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-16}
BIN=${BIN:-target/release/tollgate}
for tool in wrk python3; do
  command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 1; }
done
if [ "${SKIP_BUILD:-0}" != 1 ] && [ "$BIN" = target/release/tollgate ]; then
  cargo build --release --locked --quiet
fi
. benches/common.sh
bench_start tollgate-mcp

KEY=tollgate-bench-key
UP=$(port); GW=$(port); ADMIN=$(port)
"$BIN" mock-backend --listen 127.0.0.1:"$UP" --threads 2 >"$WORK/mock.out" 2>&1 & PIDS+=("$!")
cat >"$WORK/gw.yaml" <<EOF
server:
  listen: ["127.0.0.1:$GW"]
  admin_listen: "127.0.0.1:$ADMIN"
  threads: 2
  grace_period_seconds: 1
auth:
  api_keys:
    - { id: bench, sha256: "$(sha "$KEY")", user: bob, tenant: t, roles: [agent] }
upstreams:
  tools:
    peers: ["127.0.0.1:$UP"]
    timeouts: { connect_ms: 1000, read_ms: 10000 }
routes:
  - name: tools
    path: /mcp
    kind: mcp
    upstream: tools
    roles: [agent]
    tools:
      rules:
        - { name: get_ticket }
        - { name: list_agent_tickets, roles: [agent], owner: { argument: agent } }
limits:
  default: { requests_per_minute: 100000000 }
store:
  path: "$WORK/usage.db"
observability:
  access_log: "$WORK/access.log"
  log_level: error
EOF
"$BIN" check -c "$WORK/gw.yaml" >/dev/null
"$BIN" run -c "$WORK/gw.yaml" >"$WORK/gw.out" 2>&1 & PIDS+=("$!")
wait_port "$UP"; wait_port "$GW"; sleep 0.5

BODY='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_agent_tickets","arguments":{"agent":"bob"}}}'
for sse in 0 1; do
  cat >"$WORK/$sse.lua" <<EOF
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["X-API-Key"] = "$KEY"
wrk.headers["x-mock-mcp-sse"] = "$sse"
EOF
  for base in "127.0.0.1:$UP" "127.0.0.1:$GW"; do
    out=$(curl -s -X POST "http://$base/mcp" -H 'Content-Type: application/json' -H "X-API-Key: $KEY" \
      -H "x-mock-mcp-sse: $sse" -d "$BODY")
    grep -q 'Broken chair leg' <<<"$out" || { echo "probe $base sse=$sse failed: $out" >&2; exit 1; }
  done
done

to_ms() { awk '{l=$1; if (l ~ /us$/) {sub(/us/,"",l); l/=1000} else if (l ~ /ms$/) {sub(/ms/,"",l)} else if (l ~ /s$/) {sub(/s/,"",l); l*=1000}; print l}'; }
declare -A RPS P50 P99
run() { # target-name addr sse conns -> "req/s p50_ms p99_ms"
  local r
  r=$(wrk -t1 -c"$4" -d"${DURATION}s" --latency -s "$WORK/$3.lua" "http://$2/mcp" 2>&1)
  printf '%s %s %s\n' "$(awk '/Requests\/sec/ {print $2}' <<<"$r")" \
    "$(awk '$1 == "50%" {print $2}' <<<"$r" | to_ms)" "$(awk '$1 == "99%" {print $2}' <<<"$r" | to_ms)"
}
for round in $(seq "$ROUNDS"); do
  for kind in json sse; do
    sse=0; [ "$kind" = sse ] && sse=1
    targets=("direct 127.0.0.1:$UP" "tollgate 127.0.0.1:$GW")
    [ $((round % 2)) = 0 ] && targets=("tollgate 127.0.0.1:$GW" "direct 127.0.0.1:$UP")
    for t in "${targets[@]}"; do
      set -- $t
      read -r _ p50 p99 < <(run "$1" "$2" "$sse" 1)
      read -r rps _ _ < <(run "$1" "$2" "$sse" "$CONNS")
      P50[$1-$kind]+="$p50 "; P99[$1-$kind]+="$p99 "; RPS[$1-$kind]+="$rps "
    done
  done
done
calls=$(grep -c '"event":"mcp_tool_call"' "$WORK/access.log" || true)
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "MCP tools/call through tollgate vs direct: $ROUNDS rounds x ${DURATION}s, 1 connection (p50/p99) and $CONNS connections (req/s), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $calls tool calls audited"
for kind in json sse; do
  d50=$(median <<<"${P50[direct-$kind]}"); t50=$(median <<<"${P50[tollgate-$kind]}")
  d99=$(median <<<"${P99[direct-$kind]}"); t99=$(median <<<"${P99[tollgate-$kind]}")
  dr=$(median <<<"${RPS[direct-$kind]}"); tr_=$(median <<<"${RPS[tollgate-$kind]}")
  python3 -c "print(f'$kind: 1 conn p50 direct {float($d50):.3f} ms, tollgate {float($t50):.3f} ms (added {float($t50)-float($d50):+.3f} ms); p99 direct {float($d99):.3f} ms, tollgate {float($t99):.3f} ms (added {float($t99)-float($d99):+.3f} ms); $CONNS conns direct {float($dr):.0f} req/s, tollgate {float($tr_):.0f} req/s (ratio {float($tr_)/float($dr):.3f})')"
done
echo "rounds: $(declare -p P50 P99 RPS | tr '\n' ' ')"
