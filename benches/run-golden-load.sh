#!/usr/bin/env bash
# Journeys/s and latency at concurrency 20 and 100, embedded and on Postgres+Redis, side by side
# in one run. The services half uses a fresh schema and key prefix each time (dropped after):
# `apex_bench` and `apex_bench:`, or APEX_BENCH_SCHEMA and the same with a colon. The binaries
# are built into and run from CARGO_TARGET_DIR (default target/).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p apex-backend -p apex-benches
BIN="${CARGO_TARGET_DIR:-target}/release"
N="${N:-2000}"
SCHEMA="${APEX_BENCH_SCHEMA:-apex_bench}"
DB="${APEX_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
REDIS="${APEX_REDIS_URL:-redis://127.0.0.1:6379}"
fresh() {
  PGOPTIONS="-c client_min_messages=warning" psql "$DB" -qc "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null
  redis-cli -u "$REDIS" --scan --pattern "$SCHEMA:*" | xargs -r redis-cli -u "$REDIS" DEL >/dev/null
}
for c in 20 100; do
  echo "== embedded, concurrency $c"
  env -u APEX_DATABASE_URL -u APEX_REDIS_URL "$BIN/golden-load" --journeys "$N" --concurrency "$c"
  echo "== postgres+redis, concurrency $c"
  fresh
  APEX_DATABASE_URL="$DB" APEX_REDIS_URL="$REDIS" APEX_DATABASE_SCHEMA="$SCHEMA" APEX_REDIS_PREFIX="$SCHEMA:" \
    "$BIN/golden-load" --journeys "$N" --concurrency "$c"
done
fresh
