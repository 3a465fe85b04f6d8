#!/usr/bin/env bash
# Plan at scale (issue 3): 100k items in one project, on SQLite or PostgreSQL (release build).
#
#   bench/plan.sh [path/to/release/ouro] [postgres://...]   # no URL = SQLite in a fresh data dir
#
# Seeding 100k items takes minutes (longer on PostgreSQL). To measure again on a data dir (and
# database) seeded before, pass DATA_DIR=... and TOKEN=... (an admin API token): seeding is
# skipped and the data dir is kept.
#
# Seeds through the API (bench/seed_plan.py), then measures with oha, 4 connections, 2,000
# requests each after a warm-up:
#   - the board page (HTML, server-rendered) filtered to the 2,000 cards labelled `board`;
#   - the query `label:x state:"In progress" text:zeta` on the items API;
#   - a rank move (POST .../rank, one row written, one event appended), one connection, after
#     200 moves of warm-up.
# For scale, the same oha run on GET /healthz is printed first: the floor of the HTTP stack.
#
# DIRECT=1 seeds the items by copying the first one in SQL (bench/seed_plan.py --direct): seconds
# instead of many minutes. ONLY=rank measures only the rank move; MOVES sets its count (2,000).
# Compare a PostgreSQL rank move with the machine's floor: bench/pg-floor.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/ouro}
DB=${2:-}
N=${N:-100000}
[ -x "$BIN" ] || { echo "build first: cargo build --release -p ouro" >&2; exit 1; }
PORT=${PORT:-7098}
PID=
if [ -n "${DATA_DIR:-}" ]; then
  DATA=$DATA_DIR
  trap '[ -n "$PID" ] && kill $PID 2>/dev/null' EXIT
else
  DATA=$(mktemp -d)
  trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -rf "$DATA"' EXIT
fi
DBARGS=(--data-dir "$DATA")
[ -n "$DB" ] && DBARGS+=(--database-url "$DB")

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
if [ -n "$DB" ]; then ENGINE=PostgreSQL; else ENGINE="SQLite (data dir)"; fi
echo "== database: $ENGINE, $N items"
if [ -z "${TOKEN:-}" ]; then
  echo "bench-password" | "$BIN" admin create-user "${DBARGS[@]}" --name admin --admin --password-stdin >/dev/null 2>&1
  TOKEN=$("$BIN" admin create-token "${DBARGS[@]}" --user admin | tail -n 1)
  SEED=1
fi
"$BIN" serve "${DBARGS[@]}" --listen "127.0.0.1:$PORT" >"$DATA/serve.log" 2>&1 &
PID=$!
until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null; do sleep 0.05; done
BASE="http://127.0.0.1:$PORT"
if [ -n "${SEED:-}" ]; then
  curl -sf -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{"slug":"demo","name":"Demo"}' "$BASE/api/v1/projects" >/dev/null
  DIRECT_ARGS=()
  [ -n "${DIRECT:-}" ] && DIRECT_ARGS=(--direct "${DB:-$DATA/ouro.db}")
  python3 bench/seed_plan.py "$BASE" "$TOKEN" demo "$N" --board 2000 "${DIRECT_ARGS[@]}"
else
  echo "reusing the data seeded in $DATA"
fi
# The in-process consumers (automation, references, notifications, webhooks) handle every seeded
# event in the background; measure the steady state, not the catch-up.
T0=$(date +%s)
until curl -sf "$BASE/metrics" | awk '/^ouro_event_consumer_lag\{/ {n++; if ($2 != 0) busy=1} END {exit !(n > 0 && !busy)}'; do
  sleep 1
done
echo "consumers caught up $(( $(date +%s) - T0 )) s after seeding"

AUTH=(-H "Authorization: Bearer $TOKEN")
SUMMARY='Requests/sec|Slowest|Average|50.00%|99.00%|\[[0-9]{3}\] [0-9]+ responses'
run() { # name, then oha arguments
  local name=$1; shift
  oha -n 200 -c 4 --no-tui "${AUTH[@]}" "$@" >/dev/null
  echo "-- $name"
  oha -n 2000 -c 4 --no-tui "${AUTH[@]}" "$@" | grep -E "$SUMMARY"
}
run "GET /healthz (floor)" "$BASE/healthz"
if [ "${ONLY:-}" != rank ]; then
BOARD="$BASE/projects/demo/plan/board?q=label%3Aboard"
echo "board cards: $(curl -sf "${AUTH[@]}" "$BOARD" | grep -o 'data-key=' | wc -l)"
run "board page, 2,000 cards (HTML)" "$BOARD"
Q="$BASE/api/v1/projects/demo/items?q=label%3Ax%20state%3A%22In%20progress%22%20text%3Azeta"
echo "query hits: $(curl -sf "${AUTH[@]}" "$Q" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))')"
run 'query label:x state:"In progress" text:zeta' "$Q"
fi
MOVES=${MOVES:-2000}
MOVE=(-m POST -T application/json -d '{"before":"DEMO-10"}' "$BASE/api/v1/projects/demo/items/DEMO-$((N / 2))/rank")
# A warm-up as for the others: each pooled PostgreSQL connection plans a statement afresh for
# its first five runs (1-3 ms each in a new backend) before it keeps a generic plan.
oha -n 200 -c 1 --no-tui "${AUTH[@]}" "${MOVE[@]}" >/dev/null
echo "-- rank move DEMO-$((N / 2)) before DEMO-10 (1 connection, $MOVES moves)"
oha -n "$MOVES" -c 1 --no-tui "${AUTH[@]}" "${MOVE[@]}" | grep -E "$SUMMARY"
echo "RSS: $(awk '/VmRSS/{print $2, $3}' /proc/$PID/status)"
