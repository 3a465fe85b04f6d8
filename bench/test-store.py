#!/usr/bin/env python3
"""Storage benchmarks of test results (issue 6, section 6): history and flaky scoring at scale,
and ingesting the 30 MB JUnit file into the database.

Usage: bench/test-store.py BENCH_STORE [sqlite|postgres ...] [--runs N] [--tests N] [--queries N]

BENCH_STORE is the example binary (`cargo build -p ouro-test --example bench_store`, dev
profile: ouro-test at opt-level 2, its storage dependencies unoptimised; no release build).
For each backend (default: sqlite): seeds RUNS x TESTS results (10,000 x 1,000), times one
test's history (limit 200 and the whole history), ingestion with flaky scoring of five more
runs, then generates the 30 MB JUnit file (bench/test-reports.py's generator, 100k cases) and
times parse + store. Wall time and peak memory come from /usr/bin/time -v. postgres needs
OURO_TEST_DATABASE_URL; its fresh databases are dropped at the end. Prints figures; never fails
on timing.
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
    return p.stdout, secs, rss


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
            print(f"== {b}")
            out, secs, rss = timed([a.bench_store, "history", b, str(a.runs), str(a.tests),
                                    str(a.queries)])
            print(out.strip())
            print(f"(history process: wall {secs:.1f} s, peak RSS {rss / 1024:.0f} MB)")
            drop_databases(out)
            out, secs, rss = timed([a.bench_store, "ingest", b, junit])
            print(out.strip())
            print(f"ingest process: wall {secs:.2f} s, peak RSS {rss / 1024:.0f} MB (target <= 2 s, <= 200 MB)")
            drop_databases(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
