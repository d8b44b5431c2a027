#!/usr/bin/env bash
# Shared-ledger figures (issue 23) against a real PostgreSQL on loopback:
# the forwarder's batched insert (rows/s), disk per million rows, and the
# usage report's latency over ROWS rows for each grouping. Starts its own
# throwaway cluster (initdb + pg_ctl on a free port, as the `postgres`
# user when run as root since PostgreSQL refuses root; durable settings:
# fsync and synchronous commit on, unlike the tests), runs
# `cargo bench --bench ledger_postgres` against it, removes it.
#
#   bash benches/ledger_postgres.sh                 # 10 million rows (~3 min here)
#   ROWS=1000000 bash benches/ledger_postgres.sh
#
# Needs PostgreSQL's server binaries (apt-get install -y postgresql).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-10000000}
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$PG_BIN/initdb" ] || { echo "PostgreSQL is missing: apt-get install -y postgresql" >&2; exit 1; }
. benches/common.sh
bench_start tollgate-ledger-pg
PGPORT=$(port)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$WORK"
as_pg "$PG_BIN/initdb" -D "$WORK/data" -U postgres --auth=trust --no-sync -E UTF8 >"$WORK/initdb.log"
as_pg "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg.log" -w \
  -o "-p $PGPORT -k $WORK -c listen_addresses=127.0.0.1" start >/dev/null
# Stopped before $WORK is removed (stop_all runs on exit).
trap 'as_pg "$PG_BIN/pg_ctl" -D "$WORK/data" -m fast stop >/dev/null 2>&1 || true; stop_all' EXIT
echo "tollgate ledger_postgres bench: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $("$PG_BIN/postgres" --version), $ROWS generated rows"
TOLLGATE_BENCH_PG_URL="postgres://postgres@127.0.0.1:$PGPORT/postgres?sslmode=disable" TOLLGATE_BENCH_ROWS="$ROWS" \
  cargo bench --locked --quiet --bench ledger_postgres
