#!/usr/bin/env bash
# Output guards on vs off (issue 26), same gateway, same run: one
# tollgate with two chat routes to the same model and upstream, one with
# `output_guards: [pii, secrets]` (redact), one without. The upstream
# (`tollgate mock-backend`) answers a ~1.5 KiB support answer with nothing
# to redact, in 24 pieces (24 SSE events when streamed). Each of JSON and
# SSE is measured at saturation (req/s, CONNS connections) and at one
# connection (mean latency: the time to the whole answer, which bounds the
# time to first byte), in ROUNDS interleaved rounds; medians reported, with
# guarded/unguarded ratios.
#
#   bash benches/output_guards.sh                 # 3 rounds x 5 s per target
#   ROUNDS=1 DURATION=2 SKIP_BUILD=1 bash benches/output_guards.sh
#
# Needs wrk and python3. Loopback only; every process started here is
# stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-32}
BIN=${BIN:-target/release/tollgate}
for tool in wrk python3; do
  command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 1; }
done
if [ "${SKIP_BUILD:-0}" != 1 ]; then cargo build --release --locked --quiet; fi
. benches/common.sh
bench_start tollgate-outguard

KEY=tollgate-bench-key
SHA=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)
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
    - { id: bench, sha256: "$SHA", user: bench, tenant: t, roles: [agent] }
upstreams:
  llm:
    peers: ["127.0.0.1:$UP"]
    timeouts: { connect_ms: 1000, read_ms: 10000 }
    set_headers: { Authorization: "Bearer sk-upstream-0123456789abcdef" }
routes:
  - { name: guarded, path: /v1/chat/completions, methods: [POST], kind: llm, output_guards: [pii, secrets] }
  - { name: plain, path: /openai/plain/chat/completions, methods: [POST], kind: llm }
models:
  - { name: m, upstream: llm, input_usd_per_mtok: 1.0, output_usd_per_mtok: 1.0, max_tokens: 1000 }
limits:
  default: { requests_per_minute: 100000000 }
guards:
  output:
    pii: { detect: [email, phone, credit_card, ssn, iban], action: redact }
    secrets: { action: redact }
store:
  path: "$WORK/usage.db"
observability:
  access_log: off
  log_level: error
EOF
"$BIN" check -c "$WORK/gw.yaml" >/dev/null
"$BIN" run -c "$WORK/gw.yaml" >"$WORK/gw.out" 2>&1 & PIDS+=("$!")
wait_port "$UP"; wait_port "$GW"; sleep 0.5

ANSWER=$(python3 - <<'PY'
import base64, json
prose = ("Thanks for reaching out about order 48213. The parcel left our warehouse on "
         "2024-11-07 and the carrier shows it in transit to your local depot; expect it "
         "by Friday. Your refund of $129.99 for ticket TCK-2024-118734 was approved. ")
text = prose * 6
n = 24
step = len(text) // n
pieces = [text[i * step:(i + 1) * step] for i in range(n - 1)] + [text[(n - 1) * step:]]
print(base64.b64encode(json.dumps(pieces).encode()).decode())
PY
)
for stream in false true; do
  cat >"$WORK/$stream.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"model":"m","stream":$stream,"messages":[{"role":"user","content":"Where is my order?"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "$KEY"
wrk.headers["x-mock-answer-b64"] = "$ANSWER"
EOF
done
for path in /v1/chat/completions /openai/plain/chat/completions; do
  for stream in false true; do
    out=$(curl -s -X POST "http://127.0.0.1:$GW$path" -H 'Content-Type: application/json' -H "X-API-Key: $KEY" \
      -H "x-mock-answer-b64: $ANSWER" -d "{\"model\":\"m\",\"stream\":$stream,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}")
    grep -q "Thanks for reaching out" <<<"$out" || { echo "probe $path stream=$stream failed: $out" >&2; exit 1; }
  done
done

declare -A RPS LAT
run() { # name path stream conns -> "req/s mean_latency_ms"
  local r
  r=$(wrk -t1 -c"$4" -d"${DURATION}s" -s "$WORK/$3.lua" "http://127.0.0.1:$GW$2" 2>&1)
  awk '/Requests\/sec/ {rps=$2} /Latency/ {l=$2; if (l ~ /us$/) {sub(/us/,"",l); l/=1000} else if (l ~ /ms$/) {sub(/ms/,"",l)} else if (l ~ /s$/) {sub(/s/,"",l); l*=1000}} END {print rps, l}' <<<"$r"
}
for round in $(seq "$ROUNDS"); do
  for kind in json sse; do
    stream=false; [ "$kind" = sse ] && stream=true
    targets=("guarded /v1/chat/completions" "plain /openai/plain/chat/completions")
    [ $((round % 2)) = 0 ] && targets=("plain /openai/plain/chat/completions" "guarded /v1/chat/completions")
    for t in "${targets[@]}"; do
      set -- $t
      read -r rps _ < <(run "$1" "$2" "$stream" "$CONNS")
      read -r _ lat < <(run "$1" "$2" "$stream" 1)
      RPS[$1-$kind]+="$rps "; LAT[$1-$kind]+="$lat "
    done
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "output guards on vs off: $ROUNDS rounds x ${DURATION}s, $CONNS connections (req/s) and 1 connection (mean latency), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for kind in json sse; do
  g=$(median <<<"${RPS[guarded-$kind]}"); p=$(median <<<"${RPS[plain-$kind]}")
  gl=$(median <<<"${LAT[guarded-$kind]}"); pl=$(median <<<"${LAT[plain-$kind]}")
  python3 -c "print(f'$kind: guarded {float($g):.0f} req/s, unguarded {float($p):.0f} req/s, ratio {float($g)/float($p):.3f}; 1 conn mean latency guarded {float($gl):.3f} ms, unguarded {float($pl):.3f} ms, added {float($gl)-float($pl):+.3f} ms')"
done
echo "rounds: $(declare -p RPS LAT | tr '\n' ' ')"
