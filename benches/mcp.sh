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
. benches/common.sh
wrk_bench_start tollgate-mcp 16

start_mock_and_gateway bob tools "\"$WORK/access.log\"" <<EOF
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
EOF

BODY='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_agent_tickets","arguments":{"agent":"bob"}}}'
for sse in 0 1; do
  wrk_post_script "$WORK/$sse.lua" "$BODY" Accept "application/json, text/event-stream" x-mock-mcp-sse "$sse"
  for base in "127.0.0.1:$UP" "127.0.0.1:$GW"; do
    probe_post "http://$base/mcp" "$BODY" 'Broken chair leg' x-mock-mcp-sse "$sse"
  done
done

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
echo "MCP tools/call through tollgate vs direct: $ROUNDS rounds x ${DURATION}s, 1 connection (p50/p99) and $CONNS connections (req/s), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $calls tool calls audited"
for kind in json sse; do
  d50=$(median <<<"${P50[direct-$kind]}"); t50=$(median <<<"${P50[tollgate-$kind]}")
  d99=$(median <<<"${P99[direct-$kind]}"); t99=$(median <<<"${P99[tollgate-$kind]}")
  dr=$(median <<<"${RPS[direct-$kind]}"); tr_=$(median <<<"${RPS[tollgate-$kind]}")
  python3 -c "print(f'$kind: 1 conn p50 direct {float($d50):.3f} ms, tollgate {float($t50):.3f} ms (added {float($t50)-float($d50):+.3f} ms); p99 direct {float($d99):.3f} ms, tollgate {float($t99):.3f} ms (added {float($t99)-float($d99):+.3f} ms); $CONNS conns direct {float($dr):.0f} req/s, tollgate {float($tr_):.0f} req/s (ratio {float($tr_)/float($dr):.3f})')"
done
echo "rounds: $(declare -p P50 P99 RPS | tr '\n' ' ')"
