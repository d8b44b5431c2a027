#!/usr/bin/env bash
# Cluster-mode cost on loopback: the same plain and LLM requests through two
# tollgate instances that differ only in `store.kind` (local vs redis), in
# the same run, each round alternating them (this machine is shared and
# noisy). Prints req/s, p50 and p99 per target, the redis/local ratios, and
# the Redis round-trip time measured by redis-cli meanwhile.
#
#   bash benches/redis.sh              # 3 rounds × 3 s per target
#   ROUNDS=1 DURATION=2 bash benches/redis.sh
#
# Needs wrk and redis-server (apt-get install -y wrk redis-server).
# Loopback only; every run is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3}
CONNS=${CONNS:-8}
for tool in wrk redis-server redis-cli; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y wrk redis-server" >&2; exit 1; }
done
cargo build --release --locked --quiet
BIN=target/release/tollgate
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

MOCK=$(port); REDIS=$(port); KEY=bench-key
"$BIN" mock-backend --listen 127.0.0.1:$MOCK --threads 2 & PIDS+=($!)
redis-server --port "$REDIS" --bind 127.0.0.1 --save '' --appendonly no >/dev/null & PIDS+=($!)

gateway() { # name port store-yaml: starts it (not in a subshell, so cleanup kills it)
  local gw=$2 admin
  admin=$(port)
  cat > "$WORK/$1.yaml" <<YAML
server: { listen: ["127.0.0.1:$gw"], admin_listen: "127.0.0.1:$admin", threads: 2, grace_period_seconds: 0 }
auth:
  api_keys: [ { id: bench, sha256: "$(sha $KEY)", user: bench, tenant: t, roles: [agent] } ]
upstreams:
  support: { peers: ["127.0.0.1:$MOCK"] }
  llm: { peers: ["127.0.0.1:$MOCK"] }
routes:
  - { name: bench, path: "/bench", methods: [GET], upstream: support, roles: [agent] }
  - { name: chat, path: /v1/chat/completions, methods: [POST], kind: llm, roles: [agent] }
models:
  - { name: m, upstream: llm, input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6, max_tokens: 64 }
limits:
  default: { requests_per_minute: 100000000 }
  budgets: [ { scope: user, tokens_per_day: 100000000000 } ]
store: { path: "$WORK/$1.db", $3 }
observability: { access_log: "off", audit_log: "off", log_level: error }
YAML
  "$BIN" run -c "$WORK/$1.yaml" >/dev/null 2>&1 & PIDS+=($!)
}
LOCAL=$(port); SHARED=$(port)
gateway local "$LOCAL" "kind: local"
gateway redis "$SHARED" "kind: redis, redis_url: \"redis://127.0.0.1:$REDIS/0\""
wait_port $MOCK; wait_port $REDIS; wait_port $LOCAL; wait_port $SHARED

BODY=$(python3 -c 'import json; print(json.dumps({"model":"m","messages":[{"role":"user","content":"How do I reset my password? "*36}]}))')
cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "$KEY"
wrk.body = [[$BODY]]
LUA

run() { # name url [lua]
  local out
  if [ -n "${3:-}" ]; then out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$3" "$2")
  else out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H "X-API-Key: $KEY" "$2"); fi
  local rps p50 p99 errors
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errors=$(grep -Eo 'Non-2xx or 3xx responses: [0-9]+' <<<"$out" | awk '{print $NF}' || true)
  echo "$1 $rps $p50 $p99 ${errors:-0}" >> "$WORK/results"
}

# Warm both (connections, tokenizer, the redis connection and scripts).
curl -s -o /dev/null -H "X-API-Key: $KEY" "http://127.0.0.1:$LOCAL/bench"
curl -s -o /dev/null -H "X-API-Key: $KEY" "http://127.0.0.1:$SHARED/bench"
for r in $(seq "$ROUNDS"); do
  run local-get "http://127.0.0.1:$LOCAL/bench"
  run redis-get "http://127.0.0.1:$SHARED/bench"
  run local-chat "http://127.0.0.1:$LOCAL/v1/chat/completions" "$WORK/post.lua"
  run redis-chat "http://127.0.0.1:$SHARED/v1/chat/completions" "$WORK/post.lua"
done
# redis-cli --latency --raw: one line "min max avg samples" (ms) after -i s.
RTT=$(timeout 5 redis-cli -p "$REDIS" --latency --raw -i 1 2>/dev/null \
  | awk '{print "min " $1 ", avg " $3 ", max " $2 " ms (" $4 " pings)"}' || true)

python3 - "$WORK/results" <<'PY'
import sys, statistics, collections
def us(v):
    v = v.strip()
    for unit, f in (("us", 1), ("ms", 1000), ("s", 1e6)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return float("nan")
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, rps, p50, p99, errs = line.split()
    rows[name].append((float(rps), us(p50), us(p99), int(errs)))
med = {k: tuple(statistics.median(x[i] for x in v) for i in range(3)) + (sum(x[3] for x in v),) for k, v in rows.items()}
print(f"{'target':<12}{'req/s':>10}{'p50 µs':>10}{'p99 µs':>10}{'non-2xx':>9}   redis vs local (req/s, p50)")
for kind in ("get", "chat"):
    base = med[f"local-{kind}"]
    for who in ("local", "redis"):
        r = med[f"{who}-{kind}"]
        print(f"{who + '-' + kind:<12}{r[0]:>10.0f}{r[1]:>10.0f}{r[2]:>10.0f}{r[3]:>9}   {r[0] / base[0]:.2f}x, {r[1] / base[1]:.2f}x")
PY
echo "redis round trip on loopback (redis-cli --latency, ms): ${RTT:-n/a}"
