#!/usr/bin/env bash
# The machine's floor for one small synced PostgreSQL write, to read a rank move's latency against.
#
#   bench/pg-floor.sh 'postgres:///DB?host=/var/run/postgresql' [TRANSACTIONS]
#
# In DB (a scratch database: it creates and keeps the tables floor_items and floor_events) it runs,
# with pgbench at 1 client, TRANSACTIONS (default 3,000) times:
#   BEGIN; UPDATE one of 20,000 rows; INSERT one event row; COMMIT;
# which is the least a rank move must do (one row written, one event appended, one synced commit),
# without HTTP, authentication or reads. Prints p50 / p90 / p99 / p99.9 / max / average in ms from
# pgbench's per-transaction log. With FSYNC_FILE=PATH (a file on the filesystem of PostgreSQL's
# WAL) it first runs pg_test_fsync there for 2 s per test: the cost of one WAL flush.
set -euo pipefail
DB=${1:?usage: bench/pg-floor.sh DATABASE_URL [TRANSACTIONS]}
T=${2:-3000}
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$BIN/pgbench" ] || { echo "pgbench not found under /usr/lib/postgresql/*/bin" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if [ -n "${FSYNC_FILE:-}" ]; then
  echo "== pg_test_fsync (one 8 kB write + flush, as a WAL commit does)"
  "$BIN/pg_test_fsync" -s 2 -f "$FSYNC_FILE" | sed -n '/one 8kB write/,/^$/p'
  rm -f "$FSYNC_FILE"
fi

psql "$DB" -q -v ON_ERROR_STOP=1 <<'SQL'
SET client_min_messages = warning;
CREATE TABLE IF NOT EXISTS floor_items (id BIGINT PRIMARY KEY, project_id BIGINT NOT NULL,
    rank TEXT COLLATE "C" NOT NULL, updated_at BIGINT NOT NULL, version BIGINT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS floor_items_rank ON floor_items (project_id, rank);
CREATE TABLE IF NOT EXISTS floor_events (seq BIGSERIAL PRIMARY KEY, time BIGINT NOT NULL,
    kind TEXT NOT NULL, subject_id TEXT NOT NULL, payload TEXT NOT NULL);
INSERT INTO floor_items SELECT g, 1, lpad(g::text, 8, '0') || '1', 0, 1
    FROM generate_series(1, 20000) g ON CONFLICT DO NOTHING;
SQL
cat >"$WORK/tx.sql" <<'SQL'
\set id random(1, 20000)
BEGIN;
UPDATE floor_items SET updated_at = updated_at + 1, version = version + 1 WHERE id = :id;
INSERT INTO floor_events (time, kind, subject_id, payload) VALUES (0, 'item.updated', :id, '{"changes":{"rank":{"old":"a","new":"b"}}}');
COMMIT;
SQL
echo "== pgbench, 1 client, $T transactions: BEGIN; UPDATE one row; INSERT one row; COMMIT"
"$BIN/pgbench" -n -c 1 -t "$T" -f "$WORK/tx.sql" -l --log-prefix="$WORK/log" "$DB" >/dev/null
# The log has one line per transaction; its third field is the latency in microseconds.
cat "$WORK"/log* | python3 -c '
import sys
v = sorted(int(l.split()[2]) for l in sys.stdin if l.strip())
p = lambda q: v[min(len(v) - 1, int(q * len(v)))] / 1000
print(f"n {len(v)}  p50 {p(0.5):.2f}  p90 {p(0.9):.2f}  p99 {p(0.99):.2f}  p99.9 {p(0.999):.2f}  "
      f"max {v[-1] / 1000:.2f}  avg {sum(v) / len(v) / 1000:.2f} ms")'
