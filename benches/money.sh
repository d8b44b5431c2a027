#!/usr/bin/env bash
# Money controls (issue 27), same gateway, same run: one tollgate with two
# chat routes to the same model and upstream. `with` carries a conversation
# id (X-Conversation-Id, a new one per request: the worst case for the
# per-conversation counters) against a conversation budget; `plain` names
# no conversation. Both reserve and settle the user and tenant budgets.
# Measured at saturation (req/s, CONNS connections) in ROUNDS interleaved
# rounds; medians and the with/plain ratio reported (target >= 0.95).
#
#   bash benches/money.sh                 # 3 rounds x 5 s per target
#   ROUNDS=1 DURATION=2 SKIP_BUILD=1 BIN=/tmp/tollgate-money bash benches/money.sh
#
# Needs wrk and python3. Loopback only; every process started here is
# stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
wrk_bench_start tollgate-money 32

start_mock_and_gateway bench llm off <<EOF
routes:
  - { name: with, path: /v1/chat/completions, methods: [POST], kind: llm }
  - { name: plain, path: /plain/chat/completions, methods: [POST], kind: llm }
models:
  - { name: m, upstream: llm, input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6, max_tokens: 100 }
limits:
  default: { requests_per_minute: 100000000 }
  budgets:
    - { scope: user, tokens_per_day: 100000000000 }
    - { scope: tenant, usd_per_month: 1000000.0 }
    - { scope: conversation, tokens_per_day: 1000000, usd_per_day: 100.0 }
EOF

BODY='{"model":"m","messages":[{"role":"user","content":"Where is my order?"}]}'
wrk_post_script "$WORK/with.lua" "$BODY"
cat >>"$WORK/with.lua" <<EOF
local n = 0
request = function()
  n = n + 1
  wrk.headers["X-Conversation-Id"] = "ticket-" .. math.random(1, 1000000000) .. "-" .. n
  return wrk.format()
end
EOF
wrk_post_script "$WORK/plain.lua" "$BODY"
for path in /v1/chat/completions /plain/chat/completions; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$GW$path" -H 'Content-Type: application/json' \
    -H "X-API-Key: $KEY" -H 'X-Conversation-Id: probe' -d "$BODY")
  [ "$code" = 200 ] || { echo "probe $path answered $code" >&2; exit 1; }
done

declare -A RPS
run() { # path script -> req/s
  wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$WORK/$2.lua" "http://127.0.0.1:$GW$1" 2>&1 | awk '/Requests\/sec/ {print $2}'
}
for round in $(seq "$ROUNDS"); do
  targets=("with /v1/chat/completions" "plain /plain/chat/completions")
  [ $((round % 2)) = 0 ] && targets=("plain /plain/chat/completions" "with /v1/chat/completions")
  for t in "${targets[@]}"; do
    set -- $t
    RPS[$1]+="$(run "$2" "$1") "
  done
done
w=$(median <<<"${RPS[with]}"); p=$(median <<<"${RPS[plain]}")
echo "conversation id + conversation budget vs none: $ROUNDS rounds x ${DURATION}s, $CONNS connections, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 -c "print(f'with {float($w):.0f} req/s, plain {float($p):.0f} req/s, ratio {float($w)/float($p):.3f}')"
echo "rounds: $(declare -p RPS | tr '\n' ' ')"
