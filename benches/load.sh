#!/usr/bin/env bash
# End-to-end load benchmark on loopback, like with like (issue 9, item 5):
# the same requests to the same upstream straight, through a bare Pingora
# hop (`tollgate bare-proxy`: the baseline) and through tollgate running the
# SHIPPED config (conf/tollgate.yaml: API key, RBAC, owner rule, rate limit,
# budgets, PII + injection guards, ledger) with the access log off and on.
# Three kinds of request: a plain GET on an owner-rule route, an LLM chat
# call answered as JSON, and the same call streamed (SSE). Each is measured
# at saturation (req/s, CONNS connections) and at one connection (latency
# added by the gateway), in ROUNDS interleaved rounds (every target once per
# round, order reversed every other round: this machine is shared and
# noisy); medians are reported as ratios to the bare hop of the same run,
# with the CPU time per request of the serving process (a steadier figure
# than req/s on a shared machine) and the RSS of every process, then the
# issue's targets as PASS/FAIL.
#
#   bash benches/load.sh                      # 3 rounds x 5 s per target (~6 min)
#   ROUNDS=1 DURATION=2 SKIP_BUILD=1 BIN=/path/to/tollgate bash benches/load.sh
#   COMPARE_BIN=/tmp/tollgate-before bash benches/load.sh   # A/B: adds that build (log off) as tollgate-cmp
#   COMPARE_LOG=1 COMPARE_BIN=...                          # the same, log on: A/B of the access-log path
#
# Upstream: nginx (a generated config, one worker) when it is on PATH, so the
# mock upstream is not the bottleneck; otherwise `tollgate mock-backend`.
# Needs wrk and python3 (stdlib only). Loopback only; every step is bounded;
# every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
CMDLINE="ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-5} CONNS=${CONNS:-32} WARMUP=${WARMUP:-1} SKIP_BUILD=${SKIP_BUILD:-0} BIN=${BIN:-target/release/tollgate}${COMPARE_BIN:+ COMPARE_BIN=$COMPARE_BIN}${COMPARE_LOG:+ COMPARE_LOG=$COMPARE_LOG} bash benches/load.sh $*"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}   # seconds per target and round
CONNS=${CONNS:-32}        # connections at saturation (wrk -t1)
WARMUP=${WARMUP:-1}       # seconds of unrecorded load per target before round 1 (0: none)
BIN=${BIN:-target/release/tollgate}
COMPARE_BIN=${COMPARE_BIN:-}  # another build of tollgate, run beside BIN on the same config (log off)
COMPARE_LOG=${COMPARE_LOG:-0} # 1: COMPARE_BIN writes its access log, and the A/B line compares it with tollgate-log
THREADS=2                 # the shipped config's server.threads; bare hops get the same
for tool in wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install -y wrk curl python3)" >&2; exit 1; }
done
if [ "${SKIP_BUILD:-0}" != 1 ]; then cargo build --release --locked --quiet --features bench-tools; fi
[ -x "$BIN" ] || { echo "no binary at $BIN (SKIP_BUILD=1 needs BIN)" >&2; exit 1; }
[ -z "$COMPARE_BIN" ] || [ -x "$COMPARE_BIN" ] || { echo "no binary at COMPARE_BIN=$COMPARE_BIN" >&2; exit 1; }

# Recorded now: the tree may move on while the bench runs (BIN may come
# from elsewhere: its own commit is not knowable from here).
START=$(date -u +%Y-%m-%dT%H:%M:%SZ); LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
HEAD_AT_START="$(git rev-parse --short HEAD 2>/dev/null || echo '?')$( [ -n "$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ] && echo ' (working tree has uncommitted changes)' || true)"
. benches/common.sh
bench_start tollgate-load
rss_mib() { awk '$1 == "VmRSS:" { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# ---------------------------------------------------------------- upstream
JSON=$(port); SSE=$(port)
if command -v nginx >/dev/null; then
  UPSTREAM="nginx $(nginx -v 2>&1 | sed 's|.*/||'), 1 worker"; NGINX_MOCK=1
  python3 benches/load_setup.py nginx "$WORK/nginx.conf" --work "$WORK" --json-port "$JSON" --sse-port "$SSE"
  # -e: nginx opens its compiled-in error log before reading the config;
  # as root the worker runs as nobody (nothing it needs is in $WORK).
  nginx -p "$WORK" -e "$WORK/nginx-error.log" -c "$WORK/nginx.conf" >"$WORK/nginx.out" 2>&1 & UPSTREAM_PID=$!; PIDS+=("$UPSTREAM_PID")
else
  UPSTREAM="tollgate mock-backend, $THREADS threads (nginx not on PATH)"; NGINX_MOCK=
  "$BIN" mock-backend --listen 127.0.0.1:"$JSON" --listen 127.0.0.1:"$SSE" --threads "$THREADS" >"$WORK/mock.out" 2>&1 & UPSTREAM_PID=$!; PIDS+=("$UPSTREAM_PID")
fi

# ----------------------------------------------------------- bare hops
BARE_JSON=$(port); BARE_SSE=$(port)
"$BIN" bare-proxy --listen 127.0.0.1:"$BARE_JSON" --upstream 127.0.0.1:"$JSON" --threads "$THREADS" >"$WORK/bare-json.out" 2>&1 & BARE1=$!; PIDS+=("$BARE1")
"$BIN" bare-proxy --listen 127.0.0.1:"$BARE_SSE" --upstream 127.0.0.1:"$SSE" --threads "$THREADS" >"$WORK/bare-sse.out" 2>&1 & BARE2=$!; PIDS+=("$BARE2")

# ------------------------------------------------------------ tollgate
# Two instances of the shipped config, differing only in the access log
# (a third with COMPARE_BIN: that build, log off, or on with COMPARE_LOG=1).
KEY=tollgate-bench-key
GW=$(port); GW_LOG=$(port); GW_CMP=$(port)
INSTANCES=(gw gw-log); [ -z "$COMPARE_BIN" ] || INSTANCES+=(gw-cmp)
for inst in "${INSTANCES[@]}"; do
  case $inst in gw) listen=$GW; log=off ;; gw-log) listen=$GW_LOG; log="$WORK/access.log" ;;
    *) listen=$GW_CMP; log=off; [ "$COMPARE_LOG" != 1 ] || log="$WORK/access-cmp.log" ;; esac
  IDENTITY=$(python3 benches/load_setup.py gateway conf/tollgate.yaml "$WORK/$inst.yaml" \
    --listen "$listen" --admin "$(port)" --json-port "$JSON" --sse-port "$SSE" \
    --work "$WORK" --name "$inst" --access-log "$log" --key-sha256 "$(sha "$KEY")")
  "$BIN" check -c "$WORK/$inst.yaml" >"$WORK/$inst.check" 2>&1 || {
    cat "$WORK/$inst.check" >&2; echo "generated config $inst does not pass tollgate check" >&2; exit 1; }
done
BENCH_USER=$(sed -E 's/^user=([^ ]+).*/\1/' <<<"$IDENTITY")
"$BIN" run -c "$WORK/gw.yaml" >"$WORK/gw.out" 2>&1 & TG=$!; PIDS+=("$TG")
"$BIN" run -c "$WORK/gw-log.yaml" >"$WORK/gw-log.out" 2>&1 & TG_LOG=$!; PIDS+=("$TG_LOG")
TG_CMP=; WAIT_CMP=()
if [ -n "$COMPARE_BIN" ]; then
  "$COMPARE_BIN" run -c "$WORK/gw-cmp.yaml" >"$WORK/gw-cmp.out" 2>&1 & TG_CMP=$!; PIDS+=("$TG_CMP"); WAIT_CMP=("$GW_CMP")
fi

for p in "$JSON" "$SSE" "$BARE_JSON" "$BARE_SSE" "$GW" "$GW_LOG" "${WAIT_CMP[@]}"; do wait_port "$p"; done
sleep 0.5
IDLE_TG=$(rss_mib "$TG"); IDLE_TG_LOG=$(rss_mib "$TG_LOG"); IDLE_TG_CMP=$( [ -z "$TG_CMP" ] || rss_mib "$TG_CMP")

# --------------------------------------------------------------- requests
# The shipped owner-rule route with the bench key's own user (allowed), and
# the LLM chat route; the same paths on every target.
GET_PATH="/api/v1/agents/$BENCH_USER/tickets"
CHAT_PATH="/v1/chat/completions"
BODY_SIZES=$(python3 benches/load_setup.py bodies "$WORK" --key "$KEY" | tr '\n' ' ')

declare -A URL=(
  [direct-get]="http://127.0.0.1:$JSON$GET_PATH"      [direct-chat]="http://127.0.0.1:$JSON$CHAT_PATH"
  [direct-sse]="http://127.0.0.1:$SSE$CHAT_PATH"
  [bare-get]="http://127.0.0.1:$BARE_JSON$GET_PATH"   [bare-chat]="http://127.0.0.1:$BARE_JSON$CHAT_PATH"
  [bare-sse]="http://127.0.0.1:$BARE_SSE$CHAT_PATH"
  [tollgate-get]="http://127.0.0.1:$GW$GET_PATH"      [tollgate-chat]="http://127.0.0.1:$GW$CHAT_PATH"
  [tollgate-sse]="http://127.0.0.1:$GW$CHAT_PATH"
  [tollgate-log-get]="http://127.0.0.1:$GW_LOG$GET_PATH" [tollgate-log-chat]="http://127.0.0.1:$GW_LOG$CHAT_PATH"
  [tollgate-log-sse]="http://127.0.0.1:$GW_LOG$CHAT_PATH"
)
if [ -n "$COMPARE_BIN" ]; then
  URL+=([tollgate-cmp-get]="http://127.0.0.1:$GW_CMP$GET_PATH" [tollgate-cmp-chat]="http://127.0.0.1:$GW_CMP$CHAT_PATH"
        [tollgate-cmp-sse]="http://127.0.0.1:$GW_CMP$CHAT_PATH")
fi

# Check once before measuring: 200 everywhere, SSE ending with [DONE], and
# tollgate billing the upstream's usage (prompt 142 / completion 58 JSON,
# 61 SSE: load_setup.py) rather than estimating. A refused request (401,
# 403, 429) would make a fast, meaningless benchmark.
probe() { # target -> body in $WORK/probe, status in $WORK/status
  local kind=${1##*-} args=(-s --max-time 10 -H "X-API-Key: $KEY" -o "$WORK/probe" -w '%{http_code}')
  [ "$kind" != get ] && args+=(-H 'Content-Type: application/json' --data-binary "@$WORK/$kind.json")
  curl "${args[@]}" "${URL[$1]}" >"$WORK/status" || true
}
for t in "${!URL[@]}"; do
  probe "$t"
  [ "$(cat "$WORK/status")" = 200 ] || { echo "check failed: $t answered $(cat "$WORK/status"): $(head -c 300 "$WORK/probe")" >&2; exit 1; }
  if [[ $t == *-sse ]] && [ "$(tail -c 14 "$WORK/probe")" != 'data: [DONE]' ]; then  # $() drops the \n\n
    echo "check failed: $t: the SSE answer does not end with [DONE]" >&2; exit 1
  fi
done
billed() { # instance model kind -> tokens counted in its /metrics, or "?"
  local admin n
  admin=$(awk -F'"' '/^  admin_listen:/ { print $2 }' "$WORK/$1.yaml")
  n=$(curl -s --max-time 5 "http://$admin/metrics" | awk -v m="$2" -v k="$3" \
    'index($0, "tollgate_llm_tokens_total{") == 1 && index($0, "model=\"" m "\"") && index($0, "kind=\"" k "\"") { print $NF }')
  echo "${n:-?}"
}
for inst in "${INSTANCES[@]}"; do  # the ledger and metrics are written after the answer
  for _ in $(seq 20); do [ "$(billed $inst m-sse completion)" != "?" ] && break; sleep 0.1; done
  BILLED="m: $(billed $inst m prompt)+$(billed $inst m completion), m-sse: $(billed $inst m-sse prompt)+$(billed $inst m-sse completion)"
  EXPECT="m: 142+58, m-sse: 142+61"
  if [ -z "$NGINX_MOCK" ]; then EXPECT=$BILLED; fi  # the mock's counts come from its own estimate
  [[ $BILLED != *"?"* && $BILLED = "$EXPECT" ]] || {
    echo "check failed: $inst billed $BILLED tokens, expected the upstream's usage ($EXPECT)" >&2; exit 1; }
done

# ---------------------------------------------------------------- measure
# CPU time of the process serving a target (user + system, all its threads:
# ledger, log writer and health checks included), read around each run.
pid_of() { case $1 in bare-sse) echo "$BARE2" ;; bare-*) echo "$BARE1" ;;
  tollgate-log-*) echo "$TG_LOG" ;; tollgate-cmp-*) echo "$TG_CMP" ;; tollgate-*) echo "$TG" ;; *) echo "" ;; esac; }
run() { # mode(sat|c1) target seconds [record]
  local conns=$CONNS script=() pid t0 t1
  [ "$1" = c1 ] && conns=1
  case $2 in
    *-get) script=(-H "X-API-Key: $KEY") ;;
    *) script=(-s "$WORK/${2##*-}.lua") ;;
  esac
  local out
  pid=$(pid_of "$2"); t0=$(cpu_ticks "$pid")
  out=$(timeout $(($3 + 30)) wrk -t1 -c"$conns" -d"$3s" --latency "${script[@]}" "${URL[$2]}") || {
    echo "wrk failed on $2" >&2; exit 1; }
  t1=$(cpu_ticks "$pid")
  [ "${4:-}" = record ] || return 0
  awk -v mode="$1" -v name="$2" -v cpu_us=$(( (t1 - t0) * 1000000 / CLK_TCK )) '
    /Requests\/sec/ { rps = $2 }
    $1 == "50%" { p50 = $2 } $1 == "99%" { p99 = $2 }
    /requests in/ { n = $1 }
    /Non-2xx or 3xx responses:/ { non2xx = $NF }
    /Socket errors:/ { gsub(",", ""); sock = $4 + $6 + $8 + $10 }
    END { print mode, name, rps, p50, p99, n, non2xx + 0, sock + 0, cpu_us }' <<<"$out" >>"$WORK/results"
}
SAT=(); C1=()
for kind in get chat sse; do
  SAT+=("direct-$kind" "bare-$kind" "tollgate-$kind" "tollgate-log-$kind")
  C1+=("bare-$kind" "tollgate-$kind" "tollgate-log-$kind")
  if [ -n "$COMPARE_BIN" ]; then SAT+=("tollgate-cmp-$kind"); C1+=("tollgate-cmp-$kind"); fi
done
if [ "$WARMUP" -gt 0 ]; then for t in "${SAT[@]}"; do run sat "$t" "$WARMUP"; done; fi
ORDER=(); for t in "${SAT[@]}"; do ORDER+=("sat:$t"); done; for t in "${C1[@]}"; do ORDER+=("c1:$t"); done
for r in $(seq "$ROUNDS"); do
  echo "round $r/$ROUNDS ..." >&2
  this_round=("${ORDER[@]}")
  if [ $((r % 2)) = 0 ]; then  # reversed: no target always runs right after another
    this_round=(); for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do this_round+=("${ORDER[i]}"); done
  fi
  for item in "${this_round[@]}"; do run "${item%%:*}" "${item#*:}" "$DURATION" record; done
done

# ----------------------------------------------------------------- report
UP_RSS=0; for p in "$UPSTREAM_PID" $(pgrep -P "$UPSTREAM_PID" || true); do UP_RSS=$(awk -v a="$UP_RSS" -v b="$(rss_mib "$p")" 'BEGIN { print a + b }'); done
cat >"$WORK/env" <<ENV
date $START to $(date -u +%H:%M:%SZ)
host $(nproc) cpus, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), Linux $(uname -r); load average $LOAD_START at start, $(cut -d' ' -f1-3 /proc/loadavg) at end
binary $BIN ($("$BIN" --version 2>/dev/null | head -n1)), repo HEAD $HEAD_AT_START
upstream $UPSTREAM
config conf/tollgate.yaml as shipped (ports, peers, paths, bench key digest, limits raised but enforced; models m, m-sse = support-fast)
requests GET $GET_PATH (owner rule, key user $BENCH_USER); POST $CHAT_PATH bodies (bytes) ${BODY_SIZES% }; billed check $BILLED
command $CMDLINE
rss tollgate $(rss_mib "$TG") $IDLE_TG
rss tollgate-log $(rss_mib "$TG_LOG") $IDLE_TG_LOG
$( [ -z "$TG_CMP" ] || echo "rss tollgate-cmp $(rss_mib "$TG_CMP") $IDLE_TG_CMP" )
compare ${COMPARE_BIN:--} ($( [ -z "$COMPARE_BIN" ] || "$COMPARE_BIN" --version 2>/dev/null | head -n1)), access log $( [ "$COMPARE_LOG" = 1 ] && echo on || echo off)
cmp_log $COMPARE_LOG
rss bare $(rss_mib "$BARE1") $(rss_mib "$BARE2")
rss upstream $UP_RSS
loads $LOAD_START $(cut -d' ' -f1-3 /proc/loadavg)
log $(wc -l <"$WORK/access.log") lines, $(du -m "$WORK/access.log" | cut -f1) MiB
ENV

python3 - "$WORK/results" "$WORK/env" "$ROUNDS" "$DURATION" "$CONNS" <<'PY'
# Medians across rounds of req/s, p50 and p99 per target; ratios are
# median(tollgate) / median(bare), "added" is median(tollgate) - median(bare).
import collections, os, statistics, sys

results, envfile, rounds, duration, conns = sys.argv[1:6]
def us(v):
    for unit, f in (("us", 1), ("ms", 1e3), ("s", 1e6), ("m", 6e7)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return float("nan")
runs = collections.defaultdict(list)
for line in open(results):
    mode, name, rps, p50, p99, n, non2xx, sock, cpu_us = line.split()
    runs[mode, name].append(dict(rps=float(rps), p50=us(p50), p99=us(p99), n=int(n),
                                 non2xx=int(non2xx), sock=int(sock),
                                 cpu=int(cpu_us) / max(int(n), 1)))
def med(mode, name, k):
    return statistics.median(r[k] for r in runs[mode, name])
def errs(mode, name):
    return sum(r["non2xx"] + r["sock"] for r in runs[mode, name])

env, rss = {}, {}
for line in open(envfile):
    k, _, v = line.rstrip("\n").partition(" ")
    if k == "loads":  # 1-minute load average at start and at end
        busy = max(float(x) for x in v.split()[0::3]) > 0.5 * os.cpu_count()
    elif k == "rss":
        who, *vals = v.split()
        rss[who] = [float(x) for x in vals]
    else:
        env[k] = v
print(f"## load.sh {env['date']}")
print()
CMP = ("tollgate-cmp",) if ("sat", "tollgate-cmp-get") in runs else ()
for k in ("host", "binary") + (("compare",) if CMP else ()) + ("upstream", "config", "requests", "command"):
    print(f"{k + ':':<10}{env[k]}")
print(f"{'runs:':<10}{rounds} interleaved rounds x {duration} s per target, wrk -t1; "
      f"saturation -c{conns}, latency -c1; medians over rounds")

if busy:
    print("WARNING:  the machine was busy (load average above, other work than this bench): "
          "req/s ratios and -c1 p99 are noisy; rerun on an idle machine")
KINDS = (("get", "plain GET"), ("chat", "LLM JSON"), ("sse", "LLM SSE"))
total_errors = sum(errs(*k) for k in runs)
print()
print(f"saturation (-c{conns})   {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}  {'vs bare':>7}  {'per round':<16} {'errors':>6} {'CPU µs/req':>10}")
for kind, label in KINDS:
    bare = med("sat", f"bare-{kind}", "rps")
    for who in ("direct", "bare", "tollgate", "tollgate-log") + CMP:
        name = f"{who}-{kind}"
        per = " ".join(f"{r['rps'] / b['rps']:.2f}" for r, b in zip(runs["sat", name], runs["sat", f"bare-{kind}"]))
        cpu = f"{med('sat', name, 'cpu'):>10.1f}" if who != "direct" else f"{'':>10}"
        print(f"  {name:<21}{med('sat', name, 'rps'):>9.0f} {med('sat', name, 'p50') / 1e3:>8.3f} "
              f"{med('sat', name, 'p99') / 1e3:>8.3f}  {med('sat', name, 'rps') / bare:>6.2f}x  {per:<16} {errs('sat', name):>6} {cpu}")
print("CPU per request (the serving process, all threads), tollgate / bare hop: " + ", ".join(
    f"{label} {med('sat', f'tollgate-{kind}', 'cpu') / med('sat', f'bare-{kind}', 'cpu'):.2f}x"
    for kind, label in KINDS))
if CMP:
    # With COMPARE_LOG=1 both sides of the A/B write their access log.
    ab = "tollgate-log" if env.get("cmp_log") == "1" else "tollgate"
    print(f"A/B, binary ({ab}) / compare binary: CPU per request " + ", ".join(
        f"{label} {med('sat', f'{ab}-{kind}', 'cpu') / med('sat', f'tollgate-cmp-{kind}', 'cpu'):.2f}x"
        for kind, label in KINDS) + "; req/s " + ", ".join(
        f"{label} {med('sat', f'{ab}-{kind}', 'rps') / med('sat', f'tollgate-cmp-{kind}', 'rps'):.2f}x"
        for kind, label in KINDS))
print()
print(f"one connection (-c1)   {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}  {'+p50 ms':>7} {'+p99 ms':>8} {'errors':>6}")
for kind, label in KINDS:
    for who in ("bare", "tollgate", "tollgate-log") + CMP:
        name = f"{who}-{kind}"
        d50 = (med("c1", name, "p50") - med("c1", f"bare-{kind}", "p50")) / 1e3
        d99 = (med("c1", name, "p99") - med("c1", f"bare-{kind}", "p99")) / 1e3
        added = "" if who == "bare" else f"{d50:>+7.3f} {d99:>+8.3f}"
        print(f"  {name:<21}{med('c1', name, 'rps'):>9.0f} {med('c1', name, 'p50') / 1e3:>8.3f} "
              f"{med('c1', name, 'p99') / 1e3:>8.3f}  {added:<16} {errs('c1', name):>6}")
print()
print(f"RSS MiB   tollgate {rss['tollgate'][0]:.1f} (idle {rss['tollgate'][1]:.1f}), "
      f"tollgate-log {rss['tollgate-log'][0]:.1f} (idle {rss['tollgate-log'][1]:.1f}), "
      f"bare hops {rss['bare'][0]:.1f} + {rss['bare'][1]:.1f}, upstream {rss['upstream'][0]:.1f}"
      + (f", tollgate-cmp {rss['tollgate-cmp'][0]:.1f} (idle {rss['tollgate-cmp'][1]:.1f})" if CMP else ""))
print(f"access log (tollgate-log): {env['log']}")

print()
print("targets")
def line(ok, text):
    print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    return ok
verdicts = []
for kind, label, floor in (("get", "plain", 0.90), ("chat", "LLM JSON", 0.50), ("sse", "LLM SSE", 0.50)):
    for who in ("tollgate", "tollgate-log"):
        ratio = med("sat", f"{who}-{kind}", "rps") / med("sat", f"bare-{kind}", "rps")
        ok = line(ratio >= floor, f"{label:<9} req/s {who:<13} {ratio:.2f}x bare   (>= {floor:.2f}x)")
        if who == "tollgate":
            verdicts.append(ok)
for kind, label, cap in (("get", "plain", 0.1), ("chat", "LLM JSON", 0.3)):
    for who in ("tollgate", "tollgate-log"):
        d = (med("c1", f"{who}-{kind}", "p99") - med("c1", f"bare-{kind}", "p99")) / 1e3
        ok = line(d <= cap, f"{label:<9} p99 added at -c1 {who:<13} {d:+.3f} ms  (<= {cap} ms)")
        if who == "tollgate":
            verdicts.append(ok)
for kind in ("get", "chat"):
    p50, p99 = med("c1", f"bare-{kind}", "p50"), med("c1", f"bare-{kind}", "p99")
    if p99 > 5 * p50:
        print(f"        note: bare-{kind} -c1 p99 is {p99 / p50:.0f}x its p50: scheduling noise "
              f"dominates p99 here, the added-p99 verdicts above are unreliable")
for who in ("tollgate", "tollgate-log"):
    ok = line(rss[who][0] <= 64, f"RSS after the run {who:<13} {rss[who][0]:.1f} MiB  (<= 64 MiB)")
    if who == "tollgate":
        verdicts.append(ok)
verdicts.append(line(total_errors == 0, f"no non-2xx answers or socket errors: {total_errors}"))
print(f"  => {sum(verdicts)}/{len(verdicts)} targets met (log-off instance; log-on lines for reference)")
PY
