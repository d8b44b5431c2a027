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
. benches/common.sh
wrk_bench_start tollgate-translate 32

start_mock_and_gateway bench llm off <<EOF
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
EOF

ANSWER=$(mock_answer_b64)
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
    wrk_post_script "$WORK/$name-$stream.lua" \
      "{\"model\":\"$2\",\"max_tokens\":1000,\"stream\":$stream,\"messages\":[{\"role\":\"user\",\"content\":\"Where is my order?\"}]}" \
      x-mock-answer-b64 "$ANSWER"
    probe_post "http://127.0.0.1:$GW$1" \
      "{\"model\":\"$2\",\"max_tokens\":1000,\"stream\":$stream,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}" \
      "Thanks for reaching out" x-mock-answer-b64 "$ANSWER"
  done
done

url_of() { echo "http://127.0.0.1:$GW${TARGET[$1]%% *}"; }
measure_json_and_sse url_of direct via-anthropic direct-messages via-openai
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
