#!/usr/bin/env bash
# Cluster-mode cost on loopback: the same plain and LLM requests through two
# tollgate instances that differ only in `store.kind` (local vs redis), in
# the same run, each round alternating them (this machine is shared and
# noisy), and through a bare Pingora hop (`tollgate bare-proxy`) to the same
# upstream. Prints req/s, p50 and p99 per target, the redis/local and
# tollgate/bare ratios, CPU µs per request of the gateway process and of
# redis-server (both share this machine's cores with wrk and the upstream),
# and the Redis round-trip time measured by redis-cli meanwhile.
#
#   bash benches/redis.sh              # 3 rounds × 3 s per target
#   ROUNDS=1 DURATION=2 bash benches/redis.sh
#   SKIP_BUILD=1 BIN=/path/to/tollgate bash benches/redis.sh   # another build
#   COMPARE_BIN=/path/to/old/tollgate bash benches/redis.sh
#       adds `redis-cmp` rows: that build in redis mode on the same Redis,
#       upstream and config, in the same interleaved rounds, and an A/B line
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
BIN=${BIN:-target/release/tollgate}
if [ "${SKIP_BUILD:-0}" != 1 ]; then cargo build --release --locked --quiet --features bench-tools; fi
[ -x "$BIN" ] || { echo "no binary at $BIN (SKIP_BUILD=1 needs BIN)" >&2; exit 1; }
. benches/common.sh
bench_start tollgate-redis

MOCK=$(port); REDIS=$(port); KEY=bench-key
"$BIN" mock-backend --listen 127.0.0.1:$MOCK --threads 2 & PIDS+=($!)
redis-server --port "$REDIS" --bind 127.0.0.1 --save '' --appendonly no >/dev/null & REDIS_PID=$!; PIDS+=($!)
BARE=$(port)
"$BIN" bare-proxy --listen 127.0.0.1:$BARE --upstream 127.0.0.1:$MOCK --threads 2 >/dev/null 2>&1 & BARE_PID=$!; PIDS+=($!)

gateway() { # name port store-yaml [binary]: starts it (not in a subshell, so cleanup kills it)
  local gw=$2 admin bin=${4:-$BIN}
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
  "$bin" run -c "$WORK/$1.yaml" >/dev/null 2>&1 & PIDS+=($!); GW_PID[$1]=$!
}
declare -A GW_PID
LOCAL=$(port); SHARED=$(port)
gateway local "$LOCAL" "kind: local"
gateway redis "$SHARED" "kind: redis, redis_url: \"redis://127.0.0.1:$REDIS/0\""
if [ -n "${COMPARE_BIN:-}" ]; then
  CMP=$(port)
  # Its own key prefix: the same Redis, counters apart from the other instance's.
  gateway redis-cmp "$CMP" "kind: redis, redis_prefix: \"cmp:\", redis_url: \"redis://127.0.0.1:$REDIS/0\"" "$COMPARE_BIN"
  wait_port "$CMP"
  curl -s -o /dev/null -H "X-API-Key: $KEY" "http://127.0.0.1:$CMP/bench"
fi
wait_port $MOCK; wait_port $REDIS; wait_port $BARE; wait_port $LOCAL; wait_port $SHARED

BODY=$(python3 -c 'import json; print(json.dumps({"model":"m","messages":[{"role":"user","content":"How do I reset my password? "*36}]}))')
cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "$KEY"
wrk.body = [[$BODY]]
LUA

run() { # name serving-pid url [lua]
  local name=$1 pid=$2 url=$3 lua=${4:-} out g0 g1 r0 r1
  g0=$(cpu_ticks "$pid"); r0=$(cpu_ticks "$REDIS_PID")
  if [ -n "$lua" ]; then out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$lua" "$url")
  else out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H "X-API-Key: $KEY" "$url"); fi
  g1=$(cpu_ticks "$pid"); r1=$(cpu_ticks "$REDIS_PID")
  local rps p50 p99 errors requests
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errors=$(grep -Eo 'Non-2xx or 3xx responses: [0-9]+' <<<"$out" | awk '{print $NF}' || true)
  echo "$name $rps $p50 $p99 ${errors:-0} $(cpu_us_per_req "$g0" "$g1" "$requests") $(cpu_us_per_req "$r0" "$r1" "$requests")" >> "$WORK/results"
}

# Warm both (connections, tokenizer, the redis connection and scripts).
curl -s -o /dev/null -H "X-API-Key: $KEY" "http://127.0.0.1:$LOCAL/bench"
curl -s -o /dev/null -H "X-API-Key: $KEY" "http://127.0.0.1:$SHARED/bench"
for r in $(seq "$ROUNDS"); do
  run bare-get "$BARE_PID" "http://127.0.0.1:$BARE/bench"
  run local-get "${GW_PID[local]}" "http://127.0.0.1:$LOCAL/bench"
  run redis-get "${GW_PID[redis]}" "http://127.0.0.1:$SHARED/bench"
  [ -z "${CMP:-}" ] || run redis-cmp-get "${GW_PID[redis-cmp]}" "http://127.0.0.1:$CMP/bench"
  run bare-chat "$BARE_PID" "http://127.0.0.1:$BARE/v1/chat/completions" "$WORK/post.lua"
  run local-chat "${GW_PID[local]}" "http://127.0.0.1:$LOCAL/v1/chat/completions" "$WORK/post.lua"
  run redis-chat "${GW_PID[redis]}" "http://127.0.0.1:$SHARED/v1/chat/completions" "$WORK/post.lua"
  [ -z "${CMP:-}" ] || run redis-cmp-chat "${GW_PID[redis-cmp]}" "http://127.0.0.1:$CMP/v1/chat/completions" "$WORK/post.lua"
done
# Redis's own time per script call (EVALSHA: admission count, reserve, settle).
EVALSHA=$(redis-cli -p "$REDIS" info commandstats | tr -d '\r' \
  | awk -F'[:,=]' '$1 == "cmdstat_evalsha" { print $3 " calls, " $7 " µs each inside Redis" }')
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
    name, rps, p50, p99, errs, cpu, redis_cpu = line.split()
    rows[name].append((float(rps), us(p50), us(p99), float(cpu), float(redis_cpu), int(errs)))
med = {k: tuple(statistics.median(x[i] for x in v) for i in range(5)) + (sum(x[5] for x in v),) for k, v in rows.items()}
print(f"{'target':<12}{'req/s':>9}{'p50 µs':>9}{'p99 µs':>9}{'non-2xx':>9}{'vs bare':>9}{'vs local':>10}"
      f"{'CPU µs/req':>12}{'redis-server':>14}")
for kind in ("get", "chat"):
    bare, local = med[f"bare-{kind}"], med[f"local-{kind}"]
    for who in ("bare", "local", "redis", "redis-cmp"):
        if f"{who}-{kind}" not in med:
            continue
        r = med[f"{who}-{kind}"]
        vs_local = f"{r[0] / local[0]:.2f}x" if who.startswith("redis") else "-"
        redis_cpu = f"{r[4]:.0f}" if who.startswith("redis") else "-"
        print(f"{who + '-' + kind:<12}{r[0]:>9.0f}{r[1]:>9.0f}{r[2]:>9.0f}{r[5]:>9}{r[0] / bare[0]:>8.2f}x{vs_local:>10}"
              f"{r[3]:>12.0f}{redis_cpu:>14}")
print("CPU µs/req: user + system time of the serving process (all threads) and of redis-server over the run, per request")
if "redis-cmp-chat" in med:
    ab = lambda k, i: med[f"redis-{k}"][i] / med[f"redis-cmp-{k}"][i]
    print("A/B, redis / redis-cmp (COMPARE_BIN): req/s plain GET %.2fx, LLM JSON %.2fx; "
          "gateway CPU per request %.2fx / %.2fx; redis-server CPU per request %.2fx / %.2fx"
          % (ab("get", 0), ab("chat", 0), ab("get", 3), ab("chat", 3), ab("get", 4), ab("chat", 4)))
PY
echo "redis round trip on loopback (redis-cli --latency, ms): ${RTT:-n/a}"
echo "redis scripts (all rounds): ${EVALSHA:-n/a}"
