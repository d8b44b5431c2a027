#!/usr/bin/env bash
# API-made keys at scale (issue 24) against a real PostgreSQL on loopback:
# - 100,000 keys in the shared ledger: a gateway's start time (exec to
#   /readyz 200, the whole set loaded before it is ready) and its RSS;
#   the RSS of an instance that was running when the 100,000 arrived;
# - propagation: 100 revocations made on instance A, each timed until
#   instance B answers 401 (B polled every 2 ms): p50 / p99 / max; the
#   same for 100 creations (until B answers 200).
# Authentication cost with 100,000 keys against a handful is the criterion
# bench next to this script: `cargo bench --bench keys`.
#
#   bash benches/keys.sh                      # release build
#   SKIP_BUILD=1 BIN=target/debug/tollgate bash benches/keys.sh
#   KEYS=10000 bash benches/keys.sh
#
# Needs PostgreSQL's server binaries (apt-get install -y postgresql).
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${KEYS:-100000}
BIN=${BIN:-target/release/tollgate}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked --quiet
BIN=$(realpath "$BIN")
. benches/common.sh
bench_start tollgate-keys
pg_start
echo "tollgate keys bench: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $("$PG_BIN/postgres" --version), $KEYS keys, $BIN"

BACKEND=$(port)
"$BIN" mock-backend --listen "127.0.0.1:$BACKEND" >/dev/null 2>&1 & PIDS+=($!)
wait_port "$BACKEND"
TOKEN=bench-admin-token
config() { # name listen admin
  mkdir -p "$WORK/$1"
  cat >"$WORK/$1/tollgate.yaml" <<YAML
server:
  listen: ["127.0.0.1:$2"]
  admin_listen: "127.0.0.1:$3"
  admin_token_sha256: "$(sha "$TOKEN")"
  threads: 2
  grace_period_seconds: 1
  upgrade_sock: $WORK/$1/upgrade.sock
  pid_file: $WORK/$1/tollgate.pid
upstreams:
  support: { peers: ["127.0.0.1:$BACKEND"] }
routes:
  - { name: tickets, path: "/api/v1/tickets/**", methods: [GET], upstream: support, roles: [agent] }
limits:
  default: { requests_per_minute: 1000000 }
store: { path: $WORK/$1/usage.db }
ledger: { kind: postgres, postgres_url: "postgres://postgres@127.0.0.1:$PGPORT/postgres?sslmode=disable" }
observability: { access_log: "off", log_level: warn }
YAML
}
ready() { # admin port -> waits for /readyz 200
  for _ in $(seq 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/readyz")" = 200 ] && return 0
    sleep 0.005
  done
  echo "not ready" >&2; exit 1
}
rss_mib() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

A=$(port); A_ADMIN=$(port); B=$(port); B_ADMIN=$(port)
config a "$A" "$A_ADMIN"; config b "$B" "$B_ADMIN"
"$BIN" run -c "$WORK/a/tollgate.yaml" 2>"$WORK/a/stderr.log" & PIDS+=($!); A_PID=$!
ready "$A_ADMIN"   # A migrated the schema
echo "instance A before the keys: RSS $(rss_mib "$A_PID") MiB"

# The keys, as the admin API would have stored them (secret bench-key-N).
T0=$(date +%s.%N)
psql -c "INSERT INTO api_keys (id, digest, user_id, tenant_id, roles, note, created_at, version)
  SELECT 'key_bench_' || g, sha256(convert_to('bench-key-' || g, 'UTF8')), 'user' || (g % 1000),
         'tenant' || (g % 50), '[\"agent\"]', 'bench', extract(epoch FROM now())::bigint,
         nextval('api_key_versions')
  FROM generate_series(1, $KEYS) g;
  SELECT pg_notify('tollgate_keys', 'bench');"
T1=$(date +%s.%N)
echo "inserted $KEYS keys in $(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.2f", b - a }') s"
code() { curl -s -o /dev/null -w '%{http_code}' -H "X-API-Key: $1" "http://127.0.0.1:$2/api/v1/tickets/1"; }
for _ in $(seq 2000); do [ "$(code "bench-key-$KEYS" "$A")" = 200 ] && break; sleep 0.005; done
T2=$(date +%s.%N)
echo "instance A (running) honours all $KEYS within $(awk -v a="$T1" -v b="$T2" 'BEGIN { printf "%.2f", b - a }') s of the commit; RSS $(rss_mib "$A_PID") MiB"
sleep 2
echo "instance A 2 s later: RSS $(rss_mib "$A_PID") MiB"

S0=$(date +%s.%N)
"$BIN" run -c "$WORK/b/tollgate.yaml" 2>"$WORK/b/stderr.log" & PIDS+=($!); B_PID=$!
ready "$B_ADMIN"
S1=$(date +%s.%N)
echo "instance B start with $KEYS keys (exec to /readyz 200): $(awk -v a="$S0" -v b="$S1" 'BEGIN { printf "%.2f", b - a }') s; RSS $(rss_mib "$B_PID") MiB"
[ "$(code bench-key-1 "$B")" = 200 ] && [ "$(code bench-key-nope "$B")" = 401 ] || { echo "B does not authenticate" >&2; exit 1; }
echo "instance B after its first requests: RSS $(rss_mib "$B_PID") MiB"

python3 - "$A_ADMIN" "$B" "$TOKEN" <<'PY'
import http.client, json, sys, time
admin, b, token = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
A = http.client.HTTPConnection("127.0.0.1", admin)
B = http.client.HTTPConnection("127.0.0.1", b)
def req(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse(); data = r.read(); return r.status, data
auth = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
def status_on_b(key):
    return req(B, "GET", "/api/v1/tickets/1", headers={"X-API-Key": key})[0]
def until(key, want):
    t0 = time.monotonic()
    while status_on_b(key) != want:
        if time.monotonic() - t0 > 10: raise SystemExit("B never answered %d" % want)
        time.sleep(0.002)
    return time.monotonic() - t0
def pct(xs, p):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]
def show(name, xs):
    ms = [x * 1000 for x in xs]
    print("%s over %d: p50 %.1f ms, p99 %.1f ms, max %.1f ms" % (name, len(ms), pct(ms, 50), pct(ms, 99), max(ms)))
created, made = [], []
for i in range(100):
    t0 = time.monotonic()
    st, data = req(A, "POST", "/admin/keys", json.dumps({"user": "p%d" % i, "tenant": "bench", "roles": ["agent"]}), auth)
    assert st == 201, data
    v = json.loads(data); made.append((v["id"], v["key"]))
    until(v["key"], 200); created.append(time.monotonic() - t0)
revoked = []
for key_id, secret in made:
    t0 = time.monotonic()
    st, data = req(A, "DELETE", "/admin/keys/" + key_id, headers=auth)
    assert st == 204, data
    until(secret, 401); revoked.append(time.monotonic() - t0)
show("create on A -> 200 on B", created)
show("revoke on A -> 401 on B", revoked)
PY
