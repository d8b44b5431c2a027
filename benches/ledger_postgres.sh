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
. benches/common.sh
bench_start tollgate-ledger-pg
pg_start
echo "tollgate ledger_postgres bench: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $("$PG_BIN/postgres" --version), $ROWS generated rows"
TOLLGATE_BENCH_PG_URL="postgres://postgres@127.0.0.1:$PGPORT/postgres?sslmode=disable" TOLLGATE_BENCH_ROWS="$ROWS" \
  cargo bench --locked --quiet --bench ledger_postgres
