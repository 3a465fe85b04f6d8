#!/usr/bin/env bash
# Code hosting (issue 4): `git clone` through Ouro's smart HTTP vs the same clone over file://
# (the limit), side by side with hyperfine, and an incremental push.
#
#   bench/code.sh [path/to/release/ouro] [postgres://...]   # no URL = SQLite in a fresh data dir
#
# COMMITS (default 10000) commits touching FILES (default 5000) files are generated with
# git fast-import, imported into Ouro through the API (file:// import), then cloned both ways.
# The push is also timed against a plain `git http-backend` (no authentication, no hooks, no
# database) behind Python's CGI server: the floor of any smart-HTTP server, because git's HTTP
# client (git-remote-http with libcurl, a separate send-pack, two requests) costs time that a
# file:// push does not. PLAIN=0 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/ouro}
DB=${2:-}
COMMITS=${COMMITS:-10000}
FILES=${FILES:-5000}
[ -x "$BIN" ] || { echo "build first: cargo build --release -p ouro" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "needs hyperfine" >&2; exit 1; }
PORT=${PORT:-7099}
DATA=$(mktemp -d)
WORK=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -rf "$DATA" "$WORK"' EXIT
DBARGS=(--data-dir "$DATA")
[ -n "$DB" ] && DBARGS+=(--database-url "$DB")
export GIT_TERMINAL_PROMPT=0 GIT_CONFIG_NOSYSTEM=1 HOME="$WORK"
git config --global user.name Bench && git config --global user.email bench@example.com

echo "== machine: $(nproc) cores, $(git --version)"
echo "== source: $COMMITS commits over $FILES files"
git init -q --bare -b main "$WORK/src.git"
python3 - "$COMMITS" "$FILES" <<'PY' | git -C "$WORK/src.git" fast-import --quiet
import sys
commits, files = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout
for i in range(commits):
    msg = f"Change {i}\n"
    out.write(f"commit refs/heads/main\nmark :{i+1}\ncommitter Bench <bench@example.com> {1700000000+i} +0000\ndata {len(msg)}\n")
    out.write(msg)
    if i > 0:
        out.write(f"from :{i}\n")
    if i == 0:
        for f in range(files):
            body = f"file {f} v0\n"
            out.write(f"M 644 inline d{f % 50}/f{f}.txt\ndata {len(body)}\n{body}")
    else:
        f = (i * 7919) % files
        body = f"file {f} v{i}\n"
        out.write(f"M 644 inline d{f % 50}/f{f}.txt\ndata {len(body)}\n{body}")
    out.write("\n")
PY

echo "bench-password" | "$BIN" admin create-user "${DBARGS[@]}" --name admin --admin --password-stdin >/dev/null 2>&1
TOKEN=$("$BIN" admin create-token "${DBARGS[@]}" --user admin | tail -n 1)
NO_COLOR=1 OURO_LOG=info "$BIN" serve "${DBARGS[@]}" --listen "127.0.0.1:$PORT" >"$DATA/serve.log" 2>&1 &
PID=$!
until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null; do sleep 0.05; done
BASE="http://127.0.0.1:$PORT"
AUTH=(-H "Authorization: Bearer $TOKEN" -H 'content-type: application/json')
curl -sf "${AUTH[@]}" -d '{"slug":"demo","name":"Demo"}' "$BASE/api/v1/projects" >/dev/null
T0=$(date +%s.%N)
curl -sf "${AUTH[@]}" -d "{\"name\":\"app\",\"import_url\":\"file://$WORK/src.git\"}" \
  "$BASE/api/v1/projects/demo/repos" >/dev/null
echo "import through the API: $(echo "$(date +%s.%N) - $T0" | bc) s"
# The import indexes the whole history into code.pushed events (one transaction with the row).
echo "  of which reading the $COMMITS commits for their events: $(grep -o 'read the imported history.*' "$DATA/serve.log" | grep -o 'ms=[0-9]*') "
EVENTS=$(curl -sf "${AUTH[@]}" "$BASE/api/v1/projects/demo/events?kind=code.pushed&limit=500" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(len(e["payload"]["commits"]) for e in d["items"]), "commits in", len(d["items"]), "code.pushed events")')
echo "  indexed: $EVENTS"
URL="http://admin:$TOKEN@127.0.0.1:$PORT/git/demo/app.git"

echo "-- git clone: Ouro (smart HTTP) vs file:// (the limit)"
hyperfine --warmup 1 --runs ${RUNS:-5} \
  --prepare "rm -rf $WORK/c1 $WORK/c2" \
  -n ouro "git clone -q --bare $URL $WORK/c1" \
  -n file "git clone -q --bare --no-local file://$WORK/src.git $WORK/c2"

echo "-- incremental push of one commit: Ouro vs file://"
git clone -q "$URL" "$WORK/w1"
git clone -q "file://$WORK/src.git" "$WORK/w2"
# The server's CPU time (user + system, in clock ticks) around the push runs, its own and that
# of the git processes it started and waited for: hyperfine's User/System count the client only.
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
kids() { awk '{print $16 + $17}' "/proc/$PID/stat"; }
C0=$(cpu); K0=$(kids)
PUSH="date +%s%N > bench.txt && git add bench.txt && git commit -qm bench && git push -q origin HEAD:main"
hyperfine --runs ${RUNS:-5} \
  -n ouro "cd $WORK/w1 && $PUSH" \
  -n file "cd $WORK/w2 && $PUSH"
C1=$(cpu); K1=$(kids)
TCK=$(getconf CLK_TCK)
echo "server CPU during the ${RUNS:-5} ouro pushes: $(( (C1 - C0) * 1000 / TCK )) ms in the server, $(( (K1 - K0) * 1000 / TCK )) ms in the git processes it ran"
if [ "${PLAIN:-1}" != 0 ]; then
  # Python's CGI server drops to `nobody` when started as root: the plain repository is
  # writable by all and git is told to trust it.
  PLAIN_PORT=$((PORT + 1))
  mkdir -p "$WORK/cgi/cgi-bin"
  git clone -q --bare "file://$WORK/src.git" "$WORK/plain/app.git"
  git -C "$WORK/plain/app.git" config http.receivepack true
  chmod -R a+rwX "$WORK/plain"
  chmod a+x "$WORK" # mktemp's 0700 would keep `nobody` out
  cat >"$WORK/cgi/cgi-bin/git" <<CGI
#!/bin/sh
GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0='*' \\
GIT_PROJECT_ROOT=$WORK/plain GIT_HTTP_EXPORT_ALL=1 REMOTE_USER=bench exec git http-backend
CGI
  chmod a+rx "$WORK/cgi/cgi-bin/git"
  (cd "$WORK/cgi" && exec python3 -m http.server --cgi --bind 127.0.0.1 "$PLAIN_PORT") >"$WORK/cgi.log" 2>&1 &
  CGI_PID=$!
  trap '[ -n "$PID" ] && kill $PID 2>/dev/null; kill $CGI_PID 2>/dev/null; rm -rf "$DATA" "$WORK"' EXIT
  until curl -s -o /dev/null "http://127.0.0.1:$PLAIN_PORT/"; do sleep 0.05; done
  git clone -q "http://127.0.0.1:$PLAIN_PORT/cgi-bin/git/app.git" "$WORK/w3"
  echo "-- incremental push of one commit: Ouro vs a plain git http-backend (the smart-HTTP floor) vs file://"
  hyperfine --runs ${RUNS:-5} \
    -n ouro "cd $WORK/w1 && $PUSH" \
    -n http-backend "cd $WORK/w3 && $PUSH" \
    -n file "cd $WORK/w2 && $PUSH"
  echo "-- the same three, interleaved (push only, ${ROUNDS:-30} rounds)"
  python3 bench/push_interleaved.py "${ROUNDS:-30}" ouro="$WORK/w1" http-backend="$WORK/w3" file="$WORK/w2"
fi
