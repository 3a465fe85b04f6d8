#!/usr/bin/env python3
"""Storage benchmarks of test results (issue 6, section 6): history and flaky scoring at scale,
and ingesting the 30 MB JUnit file into the database.

Usage: bench/test-store.py BENCH_STORE [sqlite|postgres ...] [--runs N] [--tests N] [--queries N]
                           [--cases N] [--ingest-only]

BENCH_STORE is the example binary; measure a release build
(`cargo build --release -p ouro-test --example bench_store`, then
`target/release/examples/bench_store`): a dev build leaves ouro-store, sqlx and SQLite
unoptimised and is several times slower. For each backend (default: sqlite): seeds RUNS x TESTS
results (10,000 x 1,000; skipped with --ingest-only), times one test's history (limit 200 and
the whole history), ingestion with flaky scoring of five more runs, then generates the 30 MB
JUnit file (bench/test-reports.py's generator, 100k cases) and times parse + store, and storing
the same report again as the next run. Wall time, the process's CPU time (user + system) and
peak memory come from /usr/bin/time -v; the load average is printed with each step because
the machine is usually shared. On PostgreSQL the server's CPU time is printed too (the
database's backends, read from /proc). postgres needs OURO_TEST_DATABASE_URL; its fresh
databases are dropped at the end. Prints figures; never fails on timing.
"""

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile


def timed(cmd):
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
    if p.returncode != 0:
        print(p.stdout)
        print(p.stderr)
        sys.exit(1)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", p.stderr)
    h, m, s = wall.groups()
    secs = int(h or 0) * 3600 + int(m) * 60 + float(s)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    user = float(re.search(r"User time \(seconds\): ([\d.]+)", p.stderr).group(1))
    system = float(re.search(r"System time \(seconds\): ([\d.]+)", p.stderr).group(1))
    return p.stdout, secs, rss, user + system


def load():
    return "load average %.1f %.1f %.1f" % os.getloadavg()


def drop_databases(out):
    url = os.environ.get("OURO_TEST_DATABASE_URL")
    for name in re.findall(r"^database: (\w+)$", out, re.M):
        if url and shutil.which("psql"):
            subprocess.run(["psql", url, "-qc", f'DROP DATABASE IF EXISTS "{name}"'], check=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bench_store")
    ap.add_argument("backends", nargs="*", default=["sqlite"])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--tests", type=int, default=1_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--ingest-only", action="store_true")
    a = ap.parse_args()
    spec = importlib.util.spec_from_file_location(
        "test_reports", os.path.join(os.path.dirname(__file__), "test-reports.py"))
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    tmp = tempfile.mkdtemp(prefix="ouro-bench-ts-")
    try:
        junit = os.path.join(tmp, "junit.xml")
        gen.generate(junit, a.cases)
        print(f"JUnit file: {os.path.getsize(junit) / 1e6:.1f} MB, {a.cases} cases")
        for b in a.backends:
            print(f"== {b} ({load()})")
            if not a.ingest_only:
                out, secs, rss, cpu = timed([a.bench_store, "history", b, str(a.runs),
                                             str(a.tests), str(a.queries)])
                print(out.strip())
                print(f"(history process: wall {secs:.1f} s, CPU {cpu:.1f} s, "
                      f"peak RSS {rss / 1024:.0f} MB; {load()})")
                drop_databases(out)
            out, secs, rss, cpu = timed([a.bench_store, "ingest", b, junit])
            print(out.strip())
            print(f"ingest process: wall {secs:.2f} s, CPU {cpu:.2f} s (user + system), "
                  f"peak RSS {rss / 1024:.0f} MB (target <= 2 s, <= 200 MB); {load()}")
            drop_databases(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
