#!/usr/bin/env bash
# Ouro's foundation benchmarks (SQLite, release build). Prints every number docs/benchmarks.md
# records. Needs wrk and hyperfine (Debian) and oha (cargo install oha).
#
#   bench/run.sh [path/to/release/ouro]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/ouro}
[ -x "$BIN" ] || { echo "build first: cargo build --release -p ouro" >&2; exit 1; }
PORT=${PORT:-7099}
DATA=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -rf "$DATA"' EXIT

echo "== machine"
echo "$(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
"$BIN" --version

echo "== time from exec to /readyz = 200"
python3 bench/ready.py "$BIN" 20
echo "-- the floor: starting the process at all (hyperfine -N ouro --version)"
hyperfine -N --warmup 3 --runs 30 "$BIN --version" 2>/dev/null | grep -E 'Time|Range'

echo "== idle RSS"
echo "bench-password" | "$BIN" admin create-user --data-dir "$DATA" --name admin --admin --password-stdin >/dev/null 2>&1
TOKEN=$("$BIN" admin create-token --data-dir "$DATA" --user admin | tail -n 1)
"$BIN" serve --data-dir "$DATA" --listen "127.0.0.1:$PORT" >/dev/null 2>&1 &
PID=$!
until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null; do sleep 0.05; done
curl -sf -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  -d '{"slug":"demo","name":"Demo"}' "http://127.0.0.1:$PORT/api/v1/projects" >/dev/null
sleep 2
echo "idle RSS after start: $(awk '/VmRSS/{print $2, $3}' /proc/$PID/status)"

URL="http://127.0.0.1:$PORT/api/v1/projects/demo"
echo "== GET /api/v1/projects/demo at a fixed 1,000 req/s for 30 s (oha, 16 connections)"
# Warm the pools and the token's last-used stamp first.
oha -n 2000 -c 16 --no-tui -H "Authorization: Bearer $TOKEN" "$URL" >/dev/null
oha -q 1000 -z 30s -c 16 --latency-correction --no-tui -H "Authorization: Bearer $TOKEN" "$URL" \
  | grep -E 'Success rate|Requests/sec|Slowest|Fastest|Average|50.00%|90.00%|99.00%|99.90%|\[200\]|\[[45][0-9][0-9]\]'

echo "== max throughput, side by side: /healthz (the HTTP stack alone) vs the project GET (auth + access check)"
echo "-- wrk -t1 -c32 -d15s /healthz"
wrk -t1 -c32 -d15s --latency "http://127.0.0.1:$PORT/healthz" | grep -E 'Requests/sec| 50%| 99%'
echo "-- wrk -t1 -c32 -d15s /api/v1/projects/demo"
wrk -t1 -c32 -d15s --latency -H "Authorization: Bearer $TOKEN" "$URL" | grep -E 'Requests/sec| 50%| 99%|Non-2xx'
echo "RSS after load: $(awk '/VmRSS/{print $2, $3}' /proc/$PID/status)"
