#!/usr/bin/env bash
# Translation cost (issue 25), same gateway, same run: an OpenAI chat
# client calling model `direct` (an OpenAI-shaped upstream, no translation)
# and model `via-anthropic` (the same mock backend spoken to in Anthropic
# Messages: request, answer and SSE events translated both ways), and an
# Anthropic client calling `direct-messages` vs `via-openai`. The upstream
# (`tollgate mock-backend`) answers a ~1.5 KiB support answer in 24 pieces
# (24 SSE events when streamed). JSON and SSE are measured at saturation
# (req/s, CONNS connections) and at one connection (mean latency), in
# ROUNDS interleaved rounds; medians reported, translated/direct ratios.
#
#   bash benches/translate.sh                     # 3 rounds x 5 s per target
#   ROUNDS=1 DURATION=2 SKIP_BUILD=1 bash benches/translate.sh
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
bench_start tollgate-translate

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
routes:
  - { name: chat, path: /v1/chat/completions, methods: [POST], kind: llm }
  - { name: messages, path: /v1/messages, methods: [POST], kind: llm, api: anthropic_messages }
models:
  - { name: direct, upstream: llm, input_usd_per_mtok: 1.0, output_usd_per_mtok: 1.0, max_tokens: 1000 }
  - { name: via-anthropic, upstream: llm, upstream_api: anthropic_messages, input_usd_per_mtok: 1.0, output_usd_per_mtok: 1.0, max_tokens: 1000 }
  - { name: direct-messages, upstream: llm, upstream_api: anthropic_messages, input_usd_per_mtok: 1.0, output_usd_per_mtok: 1.0, max_tokens: 1000 }
  - { name: via-openai, upstream: llm, upstream_api: openai_chat, input_usd_per_mtok: 1.0, output_usd_per_mtok: 1.0, max_tokens: 1000 }
limits:
  default: { requests_per_minute: 100000000 }
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
# name -> "path model"
declare -A TARGET=(
  [direct]="/v1/chat/completions direct"
  [via-anthropic]="/v1/chat/completions via-anthropic"
  [direct-messages]="/v1/messages direct-messages"
  [via-openai]="/v1/messages via-openai"
)
for name in "${!TARGET[@]}"; do
  set -- ${TARGET[$name]}
  for stream in false true; do
    cat >"$WORK/$name-$stream.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"model":"$2","max_tokens":1000,"stream":$stream,"messages":[{"role":"user","content":"Where is my order?"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "$KEY"
wrk.headers["x-mock-answer-b64"] = "$ANSWER"
EOF
    out=$(curl -s -X POST "http://127.0.0.1:$GW$1" -H 'Content-Type: application/json' -H "X-API-Key: $KEY" \
      -H "x-mock-answer-b64: $ANSWER" -d "{\"model\":\"$2\",\"max_tokens\":1000,\"stream\":$stream,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}")
    grep -q "Thanks for reaching out" <<<"$out" || { echo "probe $name stream=$stream failed: $out" >&2; exit 1; }
  done
done

declare -A RPS LAT
run() { # name stream conns -> "req/s mean_latency_ms"
  local r path
  path=${TARGET[$1]%% *}
  r=$(wrk -t1 -c"$3" -d"${DURATION}s" -s "$WORK/$1-$2.lua" "http://127.0.0.1:$GW$path" 2>&1)
  awk '/Requests\/sec/ {rps=$2} /Latency/ {l=$2; if (l ~ /us$/) {sub(/us/,"",l); l/=1000} else if (l ~ /ms$/) {sub(/ms/,"",l)} else if (l ~ /s$/) {sub(/s/,"",l); l*=1000}} END {print rps, l}' <<<"$r"
}
for round in $(seq "$ROUNDS"); do
  for kind in json sse; do
    stream=false; [ "$kind" = sse ] && stream=true
    names=(direct via-anthropic direct-messages via-openai)
    [ $((round % 2)) = 0 ] && names=(via-anthropic direct via-openai direct-messages)
    for name in "${names[@]}"; do
      read -r rps _ < <(run "$name" "$stream" "$CONNS")
      read -r _ lat < <(run "$name" "$stream" 1)
      RPS[$name-$kind]+="$rps "; LAT[$name-$kind]+="$lat "
    done
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "translated vs same-API: $ROUNDS rounds x ${DURATION}s, $CONNS connections (req/s) and 1 connection (mean latency), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for pair in "via-anthropic direct openai->anthropic" "via-openai direct-messages anthropic->openai"; do
  set -- $pair
  for kind in json sse; do
    t=$(median <<<"${RPS[$1-$kind]}"); d=$(median <<<"${RPS[$2-$kind]}")
    tl=$(median <<<"${LAT[$1-$kind]}"); dl=$(median <<<"${LAT[$2-$kind]}")
    python3 -c "print(f'$3 $kind: translated {float($t):.0f} req/s, same-API {float($d):.0f} req/s, ratio {float($t)/float($d):.3f}; 1 conn mean latency translated {float($tl):.3f} ms, same-API {float($dl):.3f} ms, added {float($tl)-float($dl):+.3f} ms')"
  done
done
echo "rounds: $(declare -p RPS LAT | tr '\n' ' ')"
