#!/usr/bin/env python3
"""Seeds a project with N work items through the public API, for the Plan benchmarks.

    bench/seed_plan.py URL TOKEN PROJECT N [--board 2000] [--direct DB]

With --direct (DB = the server's postgres://... URL, or the path of its SQLite file), only the
first item is created through the API; the other N-1 are copies of it written straight into the
database with one INSERT (keys, numbers, titles and ranks of their own; no item.created events),
which takes seconds instead of many minutes. The labels and states below still go through the
API. Use it for the rank-move and board benchmarks, not to measure item creation.

Items are created with POST /items by 8 concurrent connections (the same path a user takes,
so events and ranks are real). Then bulk edits (100 keys per request) give them a spread
of labels and states:
  - every 50th item gets label `x` (2 % of the project);
  - every 7th item moves to "In progress" (so `state:"In progress"` selects about 14 %);
  - the first --board items get label `board` (the 2,000-card board);
  - titles carry words from a small vocabulary, so `text:zeta` selects about 1/8 of them.
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "zeta"]


def conn(url):
    u = urllib.parse.urlparse(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=60)


def call(c, token, method, path, body=None):
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    r = c.getresponse()
    data = r.read()
    if r.status >= 300:
        raise SystemExit(f"{method} {path} -> {r.status}: {data[:300]!r}")
    return json.loads(data) if data else None


def title_of(i):
    return f"Item {i} {WORDS[i % len(WORDS)]} {WORDS[(i // 8) % len(WORDS)]}"


def copy_items(db, first, n):
    """Items 2..n as copies of `first` (an item the API created), in one INSERT. Ranks are the
    first item's rank followed by the number in four base-36 digits and a final 1: valid, distinct
    and in number order after the first."""
    digits = "'0123456789abcdefghijklmnopqrstuvwxyz'"
    b36 = " || ".join(f"substr({digits}, (s.g / {36 ** k}) % 36 + 1, 1)" for k in (3, 2, 1, 0))
    word = lambda e: "CASE (" + e + ") % 8 " + " ".join(
        f"WHEN {j} THEN ' {w}'" for j, w in enumerate(WORDS)) + " END"
    prefix = first["key"].rsplit("-", 1)[0]
    sql = f"""
WITH RECURSIVE s(g) AS (SELECT 2 UNION ALL SELECT g + 1 FROM s WHERE g < {int(n)})
INSERT INTO items (project_id, number, key, type, title, description, state, state_category,
    reporter_id, priority, rank, version, created_at, updated_at)
SELECT t.project_id, s.g, '{prefix}-' || s.g, t.type,
    'Item ' || (s.g - 1) || {word("s.g - 1")} || {word("(s.g - 1) / 8")},
    t.description, t.state, t.state_category, t.reporter_id, t.priority,
    t.rank || {b36} || '1', 1, t.created_at, t.updated_at
FROM s, items t WHERE t.id = {int(first["id"])};
UPDATE plan_counters SET last_number = {int(n)}
WHERE project_id = (SELECT project_id FROM items WHERE id = {int(first["id"])});
"""
    t0 = time.time()
    if db.startswith("postgres"):
        import subprocess
        subprocess.run(["psql", db, "-q", "-v", "ON_ERROR_STOP=1", "-c", "BEGIN", "-c", sql,
                        "-c", "COMMIT", "-c", "ANALYZE items"], check=True)
    else:
        import sqlite3
        c = sqlite3.connect(db, timeout=60)
        with c:
            c.executescript(sql)
        c.execute("ANALYZE")
        c.close()
    print(f"copied {n - 1} items in SQL in {time.time() - t0:.1f} s")


def main():
    args = sys.argv[1:]
    board = 2000
    if "--board" in args:
        i = args.index("--board")
        board = int(args[i + 1])
        del args[i : i + 2]
    direct = None
    if "--direct" in args:
        i = args.index("--direct")
        direct = args[i + 1]
        del args[i : i + 2]
    url, token, project, n = args[0], args[1], args[2], int(args[3])
    items = f"/api/v1/projects/{project}/items"
    next_i = [0]
    lock = threading.Lock()
    t0 = time.time()

    def worker():
        c = conn(url)
        while True:
            with lock:
                i = next_i[0]
                if i >= n:
                    return
                next_i[0] += 1
            title = title_of(i)
            call(c, token, "POST", items, {"type": "story", "title": title})

    if direct:
        first = call(conn(url), token, "POST", items, {"type": "story", "title": title_of(0)})
        copy_items(direct, first, n)
    else:
        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    created = time.time() - t0
    print(f"created {n} items in {created:.1f} s ({n / created:.0f}/s)")

    c = conn(url)
    prefix = project.upper().replace("-", "")

    def bulk(numbers, change):
        for k in range(0, len(numbers), 100):
            keys = [f"{prefix}-{m}" for m in numbers[k : k + 100]]
            call(c, token, "POST", f"{items}/bulk", {"keys": keys, "set": change})

    bulk([m for m in range(1, n + 1) if m % 50 == 0], {"add_labels": ["x"]})
    bulk([m for m in range(1, n + 1) if m % 7 == 0], {"state": "In progress"})
    bulk(list(range(1, min(board, n) + 1)), {"add_labels": ["board"]})
    print(f"labelled and moved in {time.time() - t0 - created:.1f} s")


if __name__ == "__main__":
    main()
