#!/usr/bin/env bash
# Code browsing (issue 4): the commit page and `commits/{sha}/diff` for a 2,000-line change,
# measured with oha (target: p99 <= 100 ms).
#
#   bench/code_diff.sh [path/to/release/ouro] [postgres://...]   # no URL = SQLite in a fresh data dir
#
# The change: 20 files of 200 lines, 100 lines of each rewritten (2,000 lines added and 2,000
# removed), pushed over HTTP. Each URL gets REQUESTS (default 500) requests, CONCURRENCY (default
# 4) at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/ouro}
DB=${2:-}
REQUESTS=${REQUESTS:-500}
CONCURRENCY=${CONCURRENCY:-4}
[ -x "$BIN" ] || { echo "build first: cargo build --release -p ouro" >&2; exit 1; }
command -v oha >/dev/null || { echo "needs oha" >&2; exit 1; }
PORT=${PORT:-7098}
DATA=$(mktemp -d)
WORK=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -rf "$DATA" "$WORK"' EXIT
DBARGS=(--data-dir "$DATA")
[ -n "$DB" ] && DBARGS+=(--database-url "$DB")
export GIT_TERMINAL_PROMPT=0 GIT_CONFIG_NOSYSTEM=1 HOME="$WORK"
git config --global user.name Bench && git config --global user.email bench@example.com

echo "bench-password" | "$BIN" admin create-user "${DBARGS[@]}" --name admin --admin --password-stdin >/dev/null 2>&1
TOKEN=$("$BIN" admin create-token "${DBARGS[@]}" --user admin | tail -n 1)
"$BIN" serve "${DBARGS[@]}" --listen "127.0.0.1:$PORT" >"$DATA/serve.log" 2>&1 &
PID=$!
until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null; do sleep 0.05; done
BASE="http://127.0.0.1:$PORT"
AUTH=(-H "Authorization: Bearer $TOKEN")
curl -sf "${AUTH[@]}" -H 'content-type: application/json' -d '{"slug":"demo","name":"Demo"}' "$BASE/api/v1/projects" >/dev/null
curl -sf "${AUTH[@]}" -H 'content-type: application/json' -d '{"name":"app"}' "$BASE/api/v1/projects/demo/repos" >/dev/null

git init -q -b main "$WORK/w"
cd "$WORK/w"
for f in $(seq 1 20); do seq 1 200 | sed "s/^/file $f line /" > "f$f.txt"; done
git add . && git commit -qm "200-line files"
for f in $(seq 1 20); do sed -i '51,150s/line/LINE/' "f$f.txt"; done
git commit -qam "Rewrite 2,000 lines"
SHA=$(git rev-parse HEAD)
git push -q "http://admin:$TOKEN@127.0.0.1:$PORT/git/demo/app.git" main
cd - >/dev/null
echo "== machine: $(nproc) cores, $(git --version); change: $(git -C "$WORK/w" diff --shortstat HEAD~ HEAD)"

for url in "$BASE/projects/demo/code/app/commit/$SHA" "$BASE/api/v1/projects/demo/repos/app/commits/$SHA/diff"; do
  echo "-- $url"
  oha --no-tui -n "$REQUESTS" -c "$CONCURRENCY" "${AUTH[@]}" "$url" | grep -E "Success rate|Requests/sec|Slowest|Fastest|Average|99.00%|50.00%|\[200\]"
done
