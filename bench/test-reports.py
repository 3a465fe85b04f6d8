#!/usr/bin/env python3
"""Benchmark `ouro test-report parse --json` on a generated ~30 MB JUnit file (~100k cases).

Usage: bench/test-reports.py OURO_BINARY [CASES]

Generates the file in a temporary directory (a mix of passed, failed with messages and output,
skipped, nextest-style retries and pytest-style repeated cases), runs the parse under
/usr/bin/time -v for wall time and peak memory (maximum resident set size), checks the counts
in the JSON, and runs hyperfine when it is installed. Targets (issue 6, section 6): <= 2 s and
<= 200 MB peak. Prints the figures; never fails on timing (only on a wrong count).
"""

import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile


def generate(path, cases):
    rnd = random.Random(6)
    expect = {"total": 0, "passed": 0, "failed": 0, "skipped": 0, "errored": 0, "flaky": 0}
    suites = 100
    per = cases // suites
    out_text = "log line with some detail: value=42 ok\n" * 3
    with open(path, "w", encoding="utf-8") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites name="bench">\n')
        for s in range(suites):
            f.write(f'  <testsuite name="crate_{s}::tests" tests="{per}">\n')
            for c in range(per):
                name = f"module_{c % 50}::test_case_number_{c}_with_a_descriptive_name"
                cls = f"crate_{s}"
                r = rnd.random()
                expect["total"] += 1
                if r < 0.80:
                    f.write(f'    <testcase name="{name}" classname="{cls}" time="0.{c % 1000:03d}">\n')
                    f.write(f"      <system-out>{out_text}</system-out>\n    </testcase>\n")
                    expect["passed"] += 1
                elif r < 0.88:
                    f.write(f'    <testcase name="{name}" classname="{cls}" time="0.010">\n')
                    f.write('      <failure message="assertion `left == right` failed" type="panic">')
                    f.write("thread &apos;x&apos; panicked at src/lib.rs:10:5:\n  left: 1\n right: 2\n" * 4)
                    f.write("</failure>\n")
                    f.write(f"      <system-err>{out_text}</system-err>\n    </testcase>\n")
                    expect["failed"] += 1
                elif r < 0.93:
                    f.write(f'    <testcase name="{name}" classname="{cls}" time="0">\n')
                    f.write('      <skipped message="ignored: slow"/>\n    </testcase>\n')
                    expect["skipped"] += 1
                elif r < 0.97:
                    # nextest/Surefire: a retry element inside a passed case.
                    f.write(f'    <testcase name="{name}" classname="{cls}" time="0.020">\n')
                    f.write('      <flakyFailure message="timed out" type="timeout" time="0.5">')
                    f.write(f"timed out\n<system-out>{out_text}</system-out></flakyFailure>\n    </testcase>\n")
                    expect["passed"] += 1
                    expect["flaky"] += 1
                else:
                    # pytest/gotestsum: the case repeated, the first run errored.
                    f.write(f'    <testcase name="{name}" classname="{cls}" time="0.030">')
                    f.write('<error message="connection refused">trace</error></testcase>\n')
                    f.write(f'    <testcase name="{name}" classname="{cls}" time="0.031"/>\n')
                    expect["passed"] += 1
                    expect["flaky"] += 1
            f.write("  </testsuite>\n")
        f.write("</testsuites>\n")
    return expect


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    ouro = os.path.abspath(sys.argv[1])
    cases = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    tmp = tempfile.mkdtemp(prefix="ouro-bench-tr-")
    try:
        path = os.path.join(tmp, "junit.xml")
        expect = generate(path, cases)
        size = os.path.getsize(path)
        print(f"file: {size / 1e6:.1f} MB, {cases} cases")
        cmd = [ouro, "test-report", "parse", "--json", path]
        p = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
        if p.returncode != 0:
            print(p.stderr)
            sys.exit(1)
        got = json.loads(p.stdout)
        for k, v in expect.items():
            if got[k] != v:
                print(f"wrong {k}: {got[k]} != {v}")
                sys.exit(1)
        wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", p.stderr)
        h, m, s = wall.groups()
        secs = int(h or 0) * 3600 + int(m) * 60 + float(s)
        rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
        print(f"counts ok: {json.dumps(expect)}")
        print(f"parse --json: wall {secs:.2f} s (target <= 2 s), peak RSS {rss / 1024:.0f} MB (target <= 200 MB)")
        if shutil.which("hyperfine"):
            subprocess.run(
                ["hyperfine", "-N", "--warmup", "1", "--runs", "5", "--output", "null",
                 " ".join(cmd)],
                check=False,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
