#!/usr/bin/env bash
# Soak test of the release binary on loopback: 28 concurrent clients mix
# valid requests (plain, keep-alive, LLM JSON and SSE), invalid ones (bad
# key, CL+TE smuggling, broken and 50,000-deep JSON, an injection, 300
# header fields), slowloris heads, aborted bodies and answers, pipelined
# pairs, and requests to misbehaving upstreams (500s, answers slower than
# the read timeout, a dead peer). Reports requests served, outcomes and
# unexpected outcomes by kind, and the gateway's RSS and open fds at the
# start and at the end (after the clients have gone).
#
#   bash benches/soak.sh                  # 10 minutes
#   SOAK_SECONDS=30 bash benches/soak.sh  # short mode
#
# Exits 1 when an outcome was unexpected, RSS grew by more than
# SOAK_MAX_RSS_GROWTH_KIB (default 20 MiB) or fds did not come back to the
# start count. Needs python3. Not part of `make test`: it needs a release
# build and minutes of a busy machine.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_TO_RUN=${SOAK_SECONDS:-600}
MAX_RSS_GROWTH_KIB=${SOAK_MAX_RSS_GROWTH_KIB:-20480}
command -v python3 >/dev/null || { echo "python3 is missing" >&2; exit 1; }
# SOAK_BIN runs another binary (e.g. a debug build, to try the script).
if [ -z "${SOAK_BIN:-}" ]; then cargo build --release --locked --quiet; fi
BIN=${SOAK_BIN:-target/release/tollgate}
. benches/common.sh
bench_start tollgate-soak
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }

MOCK=$(port); DEAD=$(port); GW=$(port); ADMIN=$(port)
KEY=soak-key
"$BIN" mock-backend --listen 127.0.0.1:$MOCK --threads 2 >/dev/null 2>&1 & PIDS+=($!)
cat > "$WORK/gw.yaml" <<YAML
server: { listen: ["127.0.0.1:$GW"], admin_listen: "127.0.0.1:$ADMIN", threads: 2, grace_period_seconds: 0, header_timeout_ms: 2000, body_timeout_ms: 2000 }
auth:
  api_keys: [ { id: soak, sha256: "$(sha $KEY)", user: soak, tenant: t, roles: [agent] } ]
  failed_auth_per_ip_per_minute: 100000000
upstreams:
  support: { peers: ["127.0.0.1:$MOCK"], timeouts: { connect_ms: 300, read_ms: 2000 } }
  slow: { peers: ["127.0.0.1:$MOCK"], timeouts: { connect_ms: 300, read_ms: 500 } }
  dead: { peers: ["127.0.0.1:$DEAD"], timeouts: { connect_ms: 300, read_ms: 500 } }
  llm: { peers: ["127.0.0.1:$MOCK"] }
routes:
  - { name: tickets, path: "/api/v1/tickets/**", methods: [GET, POST], upstream: support, roles: [agent] }
  - { name: slow, path: "/api/v1/slow/**", methods: [GET], upstream: slow, roles: [agent] }
  - { name: dead, path: "/api/v1/dead/**", methods: [GET], upstream: dead, roles: [agent] }
  - { name: chat, path: /v1/chat/completions, methods: [POST], kind: llm, roles: [agent], guards: [injection] }
models:
  - { name: m, upstream: llm, input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6, max_tokens: 64 }
guards:
  injection: { action: block }
limits:
  default: { requests_per_minute: 100000000 }
  budgets: [ { scope: user, tokens_per_day: 100000000000 } ]
store: { path: "$WORK/usage.db" }
observability: { access_log: "off", audit_log: "off", log_level: error }
YAML
"$BIN" run -c "$WORK/gw.yaml" >"$WORK/gw.log" 2>&1 & GW_PID=$!; PIDS+=($GW_PID)
wait_port $MOCK; wait_port $GW

# Warm up (first connections, tokenizer, pools), then take the start figures.
python3 benches/soak.py "127.0.0.1:$GW" "$KEY" 3 >/dev/null
sleep 1
RSS0=$(rss_kib $GW_PID); FD0=$(fds $GW_PID)
echo "soak: ${SECONDS_TO_RUN}s against $BIN (pid $GW_PID): start RSS ${RSS0} KiB, ${FD0} fds"
python3 benches/soak.py "127.0.0.1:$GW" "$KEY" "$SECONDS_TO_RUN" > "$WORK/result.json"
sleep 3   # let closed connections and timed-out upstream ones wind down
RSS1=$(rss_kib $GW_PID); FD1=$(fds $GW_PID)
kill -0 $GW_PID 2>/dev/null || { echo "the gateway died:"; cat "$WORK/gw.log"; exit 1; }

python3 - "$WORK/result.json" "$RSS0" "$RSS1" "$FD0" "$FD1" "$MAX_RSS_GROWTH_KIB" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
rss0, rss1, fd0, fd1, max_growth = map(int, sys.argv[2:7])
print(f"requests: {r['requests']} in all")
print(f"{'kind':<18}{'sent':>8}   outcomes")
for kind, outcomes in r["kinds"].items():
    total = sum(outcomes.values())
    text = ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items(), key=lambda kv: -kv[1]))
    print(f"{kind:<18}{total:>8}   {text}")
print("unexpected:", json.dumps(r["unexpected"]) if r["unexpected"] else "none")
print(f"RSS: {rss0} KiB -> {rss1} KiB ({rss1 - rss0:+d} KiB); fds: {fd0} -> {fd1}")
ok = not r["unexpected"] and rss1 - rss0 <= max_growth and fd1 <= fd0
print("soak:", "ok" if ok else "FAILED")
sys.exit(0 if ok else 1)
PY
