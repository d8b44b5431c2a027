# Helpers shared by the bench scripts; sourced (`. benches/common.sh`) from
# the repository root, after `set -euo pipefail`. Every process a script
# starts goes into PIDS; `bench_start WORKDIR_PREFIX` makes $WORK and
# arranges for both to be cleaned up on exit.

PIDS=()

# Stops every process in PIDS: SIGTERM (background jobs of a script ignore
# SIGINT): nginx and redis exit at once, Pingora after its grace period;
# SIGKILL what lingers after 3 s. Then removes $WORK.
stop_all() {
  local p alive
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 30); do
    alive=0
    for p in "${PIDS[@]}"; do  # an exited child stays a zombie until `wait`
      grep -qs '^State:[[:space:]]*[^Z]' "/proc/$p/status" && alive=1
    done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  # bash reports a job it SIGKILLed ("Killed") on stderr: nothing to say here.
  { for p in "${PIDS[@]}"; do kill -KILL "$p" || true; done; wait || true; } 2>/dev/null
  rm -rf "${WORK:-}"
}

bench_start() { # prefix -> WORK=/tmp/prefix.XXXXXX, stop_all on exit
  WORK=$(mktemp -d "/tmp/$1.XXXXXX")
  trap stop_all EXIT
  trap 'exit 130' INT TERM
}

# A free loopback port (the OS picks; a race with other processes is possible
# but harmless on a bench machine: the start-up check would fail loudly).
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
# Waits for 127.0.0.1:PORT to accept, up to TENTHS tenths of a second (default 100).
wait_port() {
  for _ in $(seq "${2:-100}"); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "port $1 never opened" >&2; exit 1
}
sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
# User + system CPU time of PID (all its threads) in clock ticks; 0 without a PID.
cpu_ticks() { if [ -n "${1:-}" ]; then awk '{ print $14 + $15 }' "/proc/$1/stat"; else echo 0; fi; }
CLK_TCK=$(getconf CLK_TCK)
# CPU µs per request from two cpu_ticks readings around REQUESTS requests.
cpu_us_per_req() { awk -v d="$(($2 - $1))" -v r="$3" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", d * 1e6 / hz / r }'; }

# The prologue of a wrk bench against one gateway and the mock backend:
# ROUNDS, DURATION, CONNS (default: the second argument) and BIN defaults,
# wrk and python3 present, the release build made (unless SKIP_BUILD=1 or
# BIN names another binary), $WORK made and KEY set (the bench's API key).
wrk_bench_start() { # workdir-prefix default-conns
  ROUNDS=${ROUNDS:-3}
  DURATION=${DURATION:-5}
  CONNS=${CONNS:-$2}
  BIN=${BIN:-target/release/tollgate}
  local tool
  for tool in wrk python3; do
    command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 1; }
  done
  if [ "${SKIP_BUILD:-0}" != 1 ] && [ "$BIN" = target/release/tollgate ]; then
    cargo build --release --locked --quiet
  fi
  bench_start "$1"
  KEY=tollgate-bench-key
}

# Starts the mock backend on UP and a gateway on GW (admin on ADMIN) and
# waits for both. The gateway's config is the server block, KEY for USER
# (tenant t, role agent), the upstream UPSTREAM on the mock backend, then
# stdin (which may go on with the upstream's block: indent 4), then the
# local store and ACCESS_LOG, logging errors only.
start_mock_and_gateway() { # user upstream access-log <config-middle
  UP=$(port); GW=$(port); ADMIN=$(port)
  "$BIN" mock-backend --listen 127.0.0.1:"$UP" --threads 2 >"$WORK/mock.out" 2>&1 & PIDS+=("$!")
  {
    cat <<EOF
server:
  listen: ["127.0.0.1:$GW"]
  admin_listen: "127.0.0.1:$ADMIN"
  threads: 2
  grace_period_seconds: 1
auth:
  api_keys:
    - { id: bench, sha256: "$(sha "$KEY")", user: $1, tenant: t, roles: [agent] }
upstreams:
  $2:
    peers: ["127.0.0.1:$UP"]
    timeouts: { connect_ms: 1000, read_ms: 10000 }
EOF
    cat
    cat <<EOF
store:
  path: "$WORK/usage.db"
observability:
  access_log: $3
  log_level: error
EOF
  } >"$WORK/gw.yaml"
  "$BIN" check -c "$WORK/gw.yaml" >/dev/null
  "$BIN" run -c "$WORK/gw.yaml" >"$WORK/gw.out" 2>&1 & PIDS+=("$!")
  wait_port "$UP"; wait_port "$GW"; sleep 0.5
}

# A ~1.5 KiB support answer in 24 pieces, as the mock backend's
# x-mock-answer-b64 header takes it (base64 of a JSON list of strings).
mock_answer_b64() {
  python3 - <<'PY'
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
}

# wrk's latency figures (e.g. 812.00us, 1.20ms, 1.01s) on stdin, in ms.
to_ms() { awk '{l=$1; if (l ~ /us$/) {sub(/us/,"",l); l/=1000} else if (l ~ /ms$/) {sub(/ms/,"",l)} else if (l ~ /s$/) {sub(/s/,"",l); l*=1000}; print l}'; }
# Runs wrk for DURATION seconds on one thread; prints "req/s mean_latency_ms".
wrk_rps_mean_ms() { # conns script url
  local r
  r=$(wrk -t1 -c"$1" -d"${DURATION}s" -s "$2" "$3" 2>&1)
  printf '%s %s\n' "$(awk '/Requests\/sec/ {print $2}' <<<"$r")" "$(awk '/Latency/ {l=$2} END {print l}' <<<"$r" | to_ms)"
}
# The median of the space-separated numbers on stdin.
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# Writes a wrk script that POSTs BODY as JSON with the X-API-Key KEY and the
# other headers given as NAME VALUE pairs.
wrk_post_script() { # file body [name value]...
  local file=$1 body=$2
  shift 2
  {
    printf 'wrk.method = "POST"\n'
    printf "wrk.body = '%s'\n" "$body"
    printf 'wrk.headers["Content-Type"] = "application/json"\n'
    printf 'wrk.headers["X-API-Key"] = "%s"\n' "$KEY"
    while [ $# -ge 2 ]; do
      printf 'wrk.headers["%s"] = "%s"\n' "$1" "$2"
      shift 2
    done
  } >"$file"
}
# POSTs BODY as JSON with the X-API-Key KEY (and NAME VALUE headers) to URL;
# stops the bench unless the answer contains EXPECT.
probe_post() { # url body expect [name value]...
  local url=$1 body=$2 expect=$3 out headers=()
  shift 3
  while [ $# -ge 2 ]; do
    headers+=(-H "$1: $2")
    shift 2
  done
  out=$(curl -s -X POST "$url" -H 'Content-Type: application/json' -H "X-API-Key: $KEY" "${headers[@]}" -d "$body")
  grep -q "$expect" <<<"$out" || { echo "probe $url with $body failed: $out" >&2; exit 1; }
}

# ROUNDS rounds over the named targets, every other round in reverse order
# so that drift of the machine falls on each alike. Each target NAME has the
# wrk scripts $WORK/NAME-false.lua (JSON) and $WORK/NAME-true.lua (SSE);
# each is run at CONNS connections (req/s, appended to RPS[NAME-json|sse])
# and at one (mean latency in ms, appended to LAT[NAME-json|sse]).
# URL_OF NAME prints the target's URL.
measure_json_and_sse() { # url-of name...
  local url_of=$1 round kind stream name url rps lat i
  shift
  declare -gA RPS LAT
  for round in $(seq "$ROUNDS"); do
    local order=("$@")
    if [ $((round % 2)) = 0 ]; then
      order=()
      for ((i = $#; i >= 1; i--)); do order+=("${!i}"); done
    fi
    for kind in json sse; do
      stream=false; [ "$kind" = sse ] && stream=true
      for name in "${order[@]}"; do
        url=$("$url_of" "$name")
        read -r rps _ < <(wrk_rps_mean_ms "$CONNS" "$WORK/$name-$stream.lua" "$url")
        read -r _ lat < <(wrk_rps_mean_ms 1 "$WORK/$name-$stream.lua" "$url")
        RPS[$name-$kind]+="$rps "; LAT[$name-$kind]+="$lat "
      done
    done
  done
}

# A throwaway PostgreSQL cluster in $WORK/data on a free loopback port (after
# bench_start): sets PG_BIN and PGPORT, defines as_pg and psql, and stops the
# server before $WORK is removed. PostgreSQL refuses to run as root: as root
# it runs as the `postgres` system user.
pg_start() {
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -x "$PG_BIN/initdb" ] || { echo "PostgreSQL is missing: apt-get install -y postgresql" >&2; exit 1; }
  PGPORT=$(port)
  chmod 755 "$WORK"
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$WORK"; fi
  as_pg "$PG_BIN/initdb" -D "$WORK/data" -U postgres --auth=trust --no-sync -E UTF8 >"$WORK/initdb.log"
  as_pg "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg.log" -w \
    -o "-p $PGPORT -k $WORK -c listen_addresses=127.0.0.1" start >/dev/null
  trap 'as_pg "$PG_BIN/pg_ctl" -D "$WORK/data" -m fast stop >/dev/null 2>&1 || true; stop_all' EXIT
}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
psql() { as_pg "$PG_BIN/psql" -h "$WORK" -p "$PGPORT" -U postgres -d postgres -X -A -t -q -v ON_ERROR_STOP=1 "$@"; }
