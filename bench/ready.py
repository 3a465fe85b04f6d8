#!/usr/bin/env python3
"""Time from exec of `ouro serve` to the first 200 from /readyz.

Usage: bench/ready.py OURO_BINARY [RUNS]
Runs RUNS times on a fresh data dir (the database is created and migrated) and RUNS times on an
existing one (a restart), and prints median, p95, min and max in milliseconds.
"""
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def once(binary, fresh):
    data = tempfile.mkdtemp(prefix="ouro-bench-")
    try:
        if not fresh:
            subprocess.run([binary, "admin", "create-user", "--data-dir", data, "--name", "admin",
                            "--admin", "--password-stdin"], input=b"bench-password\n",
                           check=True, capture_output=True)
        port = free_port()
        t0 = time.perf_counter()
        proc = subprocess.Popen([binary, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                    c.request("GET", "/readyz")
                    if c.getresponse().status == 200:
                        return (time.perf_counter() - t0) * 1000
                except OSError:
                    pass
                if time.perf_counter() - t0 > 10:
                    raise SystemExit("not ready within 10 s")
                time.sleep(0.001)
        finally:
            proc.terminate()
            proc.wait()
    finally:
        shutil.rmtree(data, ignore_errors=True)


def summary(name, xs):
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
    print(f"{name}: median {statistics.median(xs):.1f} ms, p95 {p95:.1f} ms, "
          f"min {xs[0]:.1f} ms, max {xs[-1]:.1f} ms over {len(xs)} runs")


if __name__ == "__main__":
    binary = os.path.abspath(sys.argv[1])
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    summary("ready, fresh data dir (creates and migrates the database)", [once(binary, True) for _ in range(runs)])
    summary("ready, existing data dir (restart)", [once(binary, False) for _ in range(runs)])
