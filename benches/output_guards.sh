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
. benches/common.sh
wrk_bench_start tollgate-outguard 32

start_mock_and_gateway bench llm off <<EOF
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
EOF

ANSWER=$(mock_answer_b64)
declare -A PATH_OF=([guarded]=/v1/chat/completions [plain]=/openai/plain/chat/completions)
for name in guarded plain; do
  for stream in false true; do
    wrk_post_script "$WORK/$name-$stream.lua" \
      '{"model":"m","stream":'"$stream"',"messages":[{"role":"user","content":"Where is my order?"}]}' \
      x-mock-answer-b64 "$ANSWER"
    probe_post "http://127.0.0.1:$GW${PATH_OF[$name]}" '{"model":"m","stream":'"$stream"',"messages":[{"role":"user","content":"hi"}]}' \
      "Thanks for reaching out" x-mock-answer-b64 "$ANSWER"
  done
done

url_of() { echo "http://127.0.0.1:$GW${PATH_OF[$1]}"; }
measure_json_and_sse url_of guarded plain
echo "output guards on vs off: $ROUNDS rounds x ${DURATION}s, $CONNS connections (req/s) and 1 connection (mean latency), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for kind in json sse; do
  g=$(median <<<"${RPS[guarded-$kind]}"); p=$(median <<<"${RPS[plain-$kind]}")
  gl=$(median <<<"${LAT[guarded-$kind]}"); pl=$(median <<<"${LAT[plain-$kind]}")
  python3 -c "print(f'$kind: guarded {float($g):.0f} req/s, unguarded {float($p):.0f} req/s, ratio {float($g)/float($p):.3f}; 1 conn mean latency guarded {float($gl):.3f} ms, unguarded {float($pl):.3f} ms, added {float($gl)-float($pl):+.3f} ms')"
done
echo "rounds: $(declare -p RPS LAT | tr '\n' ' ')"
