#!/usr/bin/env bash
# Config scale: how long `tollgate check`, start and reload take, and how much
# memory the gateway holds, with 10 / 10,000 / 100,000 API keys.
#
#   bash benches/config_scale.sh              # 10, 10000, 100000 keys
#   SIZES="100000" RELOADS=5 bash benches/config_scale.sh
#
# Per size it prints: YAML size, `check` wall time, RSS after start
# (steady), wall time of each reload (POST /admin/reload, timed until the
# answer), the peak RSS during the reloads (VmHWM, reset after start through
# /proc/PID/clear_refs) and its ratio to the steady RSS, and the steady RSS
# per key above the 10-key baseline. Loopback only; bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"10 10000 100000"}
RELOADS=${RELOADS:-3}
cargo build --release --locked --quiet
BIN=$PWD/target/release/tollgate
. benches/common.sh
bench_start tollgate-config-scale
kib() { awk -v f="$2" '$1 == f":" { print $2 }' "/proc/$1/status"; }
now() { date +%s.%N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }

ADMIN_TOKEN=bench-admin
ADMIN_SHA=$(printf '%s' "$ADMIN_TOKEN" | sha256sum | cut -d' ' -f1)

gen_config() { # $1 keys, $2 file, $3 listen port, $4 admin port
    python3 - "$1" "$2" "$3" "$4" "$ADMIN_SHA" "$WORK" <<'PY'
import hashlib, sys
n, path, port, admin, admin_sha, work = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
with open(path, "w") as f:
    f.write(f"""server: {{ listen: ["127.0.0.1:{port}"], admin_listen: "127.0.0.1:{admin}", admin_token_sha256: "{admin_sha}", threads: 2, grace_period_seconds: 0 }}
upstreams:
  support: {{ peers: ["127.0.0.1:9"] }}
routes:
  - {{ name: tickets, path: "/api/v1/tickets/**", methods: [GET], upstream: support, roles: [agent] }}
limits:
  default: {{ requests_per_minute: 100 }}
store: {{ path: "{work}/usage-{n}.db" }}
observability: {{ access_log: "off", audit_log: "off", log_level: error }}
auth:
  api_keys:
""")
    for i in range(n):
        digest = hashlib.sha256(f"key-{i}".encode()).hexdigest()
        f.write(f"""    - id: key-{i}
      sha256: "{digest}"
      user: user-{i}
      tenant: tenant-{i % 100}
      roles: [agent]
      expires_at: "2030-01-01T00:00:00Z"
""")
PY
}

printf '%-8s %9s %8s %10s %12s %14s %8s %10s\n' keys yaml_MiB check_ms rss_MiB reload_ms reload_peak_MiB peak/rss B/key
base_kib=""
for n in $SIZES; do
    GW=$(port); ADMIN=$(port); CONF="$WORK/keys-$n.yaml"
    gen_config "$n" "$CONF" "$GW" "$ADMIN"
    yaml=$(stat -c %s "$CONF")
    t0=$(now); "$BIN" check -c "$CONF" >/dev/null; t1=$(now)
    "$BIN" run -c "$CONF" >/dev/null 2>&1 & PID=$!; PIDS=("$PID")
    wait_port "$GW" 600; wait_port "$ADMIN" 600; sleep 1
    steady=$(kib "$PID" VmRSS)
    echo 5 > "/proc/$PID/clear_refs"   # reset VmHWM: the peak below is the reloads'
    reload_ms=()
    for _ in $(seq "$RELOADS"); do
        r0=$(now)
        curl -fsS -X POST -H "Authorization: Bearer $ADMIN_TOKEN" "http://127.0.0.1:$ADMIN/admin/reload" >/dev/null
        r1=$(now); reload_ms+=("$(ms "$r0" "$r1")")
    done
    sleep 1
    peak=$(kib "$PID" VmHWM); after=$(kib "$PID" VmRSS)
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""; PIDS=()
    [ -z "$base_kib" ] && base_kib=$steady
    per_key=$(awk -v s="$steady" -v b="$base_kib" -v n="$n" 'BEGIN { if (n > 10) printf "%.0f", (s - b) * 1024 / n; else print "-" }')
    printf '%-8s %9.1f %8s %10.1f %12s %14.1f %8.2f %10s   (rss after reloads %.1f MiB)\n' \
        "$n" "$(awk -v y="$yaml" 'BEGIN{print y/1048576}')" "$(ms "$t0" "$t1")" \
        "$(awk -v k="$steady" 'BEGIN{print k/1024}')" "$(IFS=/; echo "${reload_ms[*]}")" \
        "$(awk -v k="$peak" 'BEGIN{print k/1024}')" "$(awk -v p="$peak" -v s="$steady" 'BEGIN{print p/s}')" \
        "$per_key" "$(awk -v k="$after" 'BEGIN{print k/1024}')"
done
