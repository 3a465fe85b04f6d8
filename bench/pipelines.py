#!/usr/bin/env python3
"""Pipelines (issue 5, section 11): W1..W4 through a real `ouro serve` with its in-process runner,
side by side with the same commands through `xargs -P SLOTS` (the limit).

Usage: bench/pipelines.py OURO_BINARY [DATABASE_URL]      (no URL: SQLite in a fresh data dir)
Env: SLOTS (default 6), REPS (default 3), W4_BYTES (default 100000000), ONLY (e.g. w1,w3).

- W1: 200 independent jobs of `true`.
- W2: a 200-job DAG, 10 layers of 20, each job needing 2 jobs of the layer before.
- W3: a 200-job serial chain.
- W4: one job printing W4_BYTES of log lines; the raw log is fetched back and its sha256 compared
  with the same command's output (byte-exact retrieval).

Each workload is one pipeline file triggered by a push of its own branch (`w1`..`w4`). Reported:
trigger (the start of `git push`) to the first job start (p50/p99 over REPS), trigger to all
done, W3's per-hop latency (a job's start minus the finish of the job it needs), W4's ingest
MB/s (bytes / job duration), and the server's peak RSS (VmHWM). Timing never goes into a test.
"""
import datetime
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "target/release/ouro"
DB = sys.argv[2] if len(sys.argv) > 2 else None
SLOTS = int(os.environ.get("SLOTS", "6"))
REPS = int(os.environ.get("REPS", "3"))
W4_BYTES = int(os.environ.get("W4_BYTES", "100000000"))
# 99 characters and a newline per line.
# (`yes` ends on SIGPIPE: outside the pipeline's status, which `pipefail` would make 141.)
W4_CMD = f"head -c {W4_BYTES} < <(yes 'ouro log line 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 ....')"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ms(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def job(name, needs, run):
    out = f"  {name}:\n"
    if needs:
        out += f"    needs: [{', '.join(needs)}]\n"
    return out + f"    steps:\n      - run: {json.dumps(run)}\n"


def pipeline(branch, jobs):
    return f"name: {branch}\non:\n  push:\n    branches: [{branch}]\njobs:\n" + "".join(jobs)


def workloads():
    w1 = [job(f"j{i:03}", [], "true") for i in range(200)]
    w2 = []
    for layer in range(10):
        for i in range(20):
            needs = [] if layer == 0 else [f"l{layer-1}_{i:02}", f"l{layer-1}_{(i+1)%20:02}"]
            w2.append(job(f"l{layer}_{i:02}", needs, "true"))
    w3 = [job(f"s{i:03}", [f"s{i-1:03}"] if i else [], "true") for i in range(200)]
    w4 = [job("print", [], W4_CMD)]
    return {"w1": w1, "w2": w2, "w3": w3, "w4": w4}


class Server:
    def __init__(self):
        self.data = tempfile.mkdtemp(prefix="ouro-pipelines-")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = ["--data-dir", self.data] + (["--database-url", DB] if DB else [])
        subprocess.run([BIN, "admin", "create-user", *args, "--name", "admin", "--admin",
                        "--password-stdin"], input=b"bench-password\n", check=True,
                       capture_output=True)
        out = subprocess.run([BIN, "admin", "create-token", *args, "--user", "admin"],
                             check=True, capture_output=True, text=True).stdout
        self.token = out.strip().splitlines()[-1]
        env = dict(os.environ, NO_COLOR="1", OURO_LOG="warn", OURO_RUNNER_SLOTS=str(SLOTS),
                   # W4's log is stored whole (the default cap is 64 MiB).
                   OURO_BUILD_LOG_CAP_BYTES=str(max(W4_BYTES * 2, 64 << 20)))
        self.log = open(os.path.join(self.data, "serve.log"), "wb")
        self.proc = subprocess.Popen([BIN, "serve", *args, "--listen", f"127.0.0.1:{self.port}"],
                                     env=env, stdout=self.log, stderr=self.log)
        while True:
            try:
                urllib.request.urlopen(self.base + "/readyz", timeout=1)
                break
            except Exception:
                time.sleep(0.05)

    def call(self, method, path, body=None, raw=False):
        req = urllib.request.Request(self.base + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("content-type", "application/json")
        with urllib.request.urlopen(req, timeout=600) as r:
            data = r.read()
        return data if raw else json.loads(data or b"null")

    def peak_rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def cpu_seconds(self):
        """(user, system) CPU seconds of the server, and of its finished children (steps, git)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        hz = os.sysconf("SC_CLK_TCK")
        ut, st, cut, cst = (int(x) / hz for x in fields[11:15])
        return ut, st, cut, cst

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.data, ignore_errors=True)


def git(work, *args):
    subprocess.run(["git", "-C", work, *args], check=True, capture_output=True)


def run_once(srv, work, url, branch):
    """Pushes `branch` and waits for its run; returns (push start ms, run detail)."""
    git(work, "commit", "-q", "--allow-empty", "-m", f"bench {branch}")
    t0 = time.time() * 1000
    git(work, "push", "-q", "--force", url, f"HEAD:refs/heads/{branch}")
    sha = subprocess.run(["git", "-C", work, "rev-parse", "HEAD"], capture_output=True,
                         text=True, check=True).stdout.strip()
    while True:
        runs = srv.call("GET", f"/api/v1/projects/demo/pipelines?ref=refs/heads/{branch}")["runs"]
        mine = [r for r in runs if r["sha"] == sha]
        if mine and mine[0]["status"] in ("success", "failure", "cancelled"):
            detail = srv.call("GET", f"/api/v1/projects/demo/pipelines/{mine[0]['number']}")
            if detail["status"] != "success":
                why = "; ".join(f"{j['key']}: {j['status']} {j.get('reason') or ''}"
                                for j in detail["jobs"] if j["status"] != "success")
                sys.exit(f"{branch}: run #{detail['number']} ended {detail['status']} ({why})")
            return t0, detail
        time.sleep(0.02)


def xargs_limit(name):
    """The same commands through xargs -P SLOTS (W1, W2 by layer) or a shell loop (W3)."""
    t = time.time()
    if name == "w1":
        subprocess.run(f"seq 200 | xargs -P {SLOTS} -I{{}} sh -c true", shell=True, check=True)
    elif name == "w2":
        for _ in range(10):
            subprocess.run(f"seq 20 | xargs -P {SLOTS} -I{{}} sh -c true", shell=True, check=True)
    elif name == "w3":
        subprocess.run("for i in $(seq 200); do sh -c true; done", shell=True, check=True)
    else:
        subprocess.run(["bash", "-c", W4_CMD], stdout=subprocess.DEVNULL, check=True)
    return (time.time() - t) * 1000


def main():
    if not os.access(BIN, os.X_OK):
        sys.exit("build first: cargo build --release -p ouro")
    print(f"== load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"== machine: {os.cpu_count()} cores; database: {'PostgreSQL' if DB else 'SQLite'}; "
          f"in-process runner with {SLOTS} slots; {REPS} runs per workload")
    srv = Server()
    work = tempfile.mkdtemp(prefix="ouro-pipelines-work-")
    try:
        srv.call("POST", "/api/v1/projects", {"slug": "demo", "name": "Demo"})
        srv.call("POST", "/api/v1/projects/demo/repos", {"name": "bench"})
        url = f"http://admin:{srv.token}@127.0.0.1:{srv.port}/git/demo/bench.git"
        git(work, "init", "-q", "-b", "main")
        git(work, "config", "user.name", "Bench")
        git(work, "config", "user.email", "bench@example.com")
        os.makedirs(os.path.join(work, ".ouro/pipelines"))
        for name, jobs in workloads().items():
            with open(os.path.join(work, f".ouro/pipelines/{name}.yml"), "w") as f:
                f.write(pipeline(name, jobs))
        git(work, "add", ".")
        git(work, "commit", "-q", "-m", "pipelines")
        git(work, "push", "-q", url, "HEAD:refs/heads/main")
        print("| workload | first job start p50 / p99 | all done p50 (min..max) | xargs (the limit) | notes |")
        print("|---|---|---|---|---|")
        for name in os.environ.get("ONLY", "w1,w2,w3,w4").split(","):
            firsts, totals, notes = [], [], ""
            rates, checks = [], []
            for _ in range(REPS):
                t0, d = run_once(srv, work, url, name)
                jobs = d["jobs"]
                starts = [ms(j["started_at"]) for j in jobs]
                ends = [ms(j["finished_at"]) for j in jobs]
                firsts.append(min(starts) - t0)
                totals.append(max(ends) - t0)
                if name == "w3":
                    by_key = {j["key"]: j for j in jobs}
                    hops = [ms(j["started_at"]) - ms(by_key[j["needs"][0]]["finished_at"])
                            for j in jobs if j["needs"]]
                    runs = [ms(j["finished_at"]) - ms(j["started_at"]) for j in jobs]
                    notes = (f"per hop {statistics.median(hops):.1f} ms p50, "
                             f"{pct(hops, 99):.1f} p99; a job start to finish "
                             f"{statistics.median(runs):.1f} ms p50, {pct(runs, 99):.1f} p99")
                if name == "w4":
                    j = jobs[0]
                    secs = (ms(j["finished_at"]) - ms(j["started_at"])) / 1000
                    raw = srv.call("GET", f"/api/v1/projects/demo/pipelines/{d['number']}"
                                   f"/jobs/{j['id']}/log", raw=True)
                    want = subprocess.run(["bash", "-c", W4_CMD], capture_output=True).stdout
                    exact = hashlib.sha256(raw).digest() == hashlib.sha256(want).digest()
                    rates.append(f"{W4_BYTES / 1e6 / secs:.0f}")
                    checks.append('byte-exact' if exact else f'DIFFERS ({len(raw)} bytes)')
                    notes = (f"{'/'.join(rates)} MB/s ingest (each run); raw log "
                             f"{', '.join(sorted(set(checks)))}")
            limit = statistics.median(xargs_limit(name) for _ in range(REPS))
            print(f"| {name} | {statistics.median(firsts):.0f} / {pct(firsts, 99):.0f} ms | "
                  f"{statistics.median(totals):.0f} ms ({min(totals):.0f}..{max(totals):.0f}) | "
                  f"{limit:.0f} ms | {notes} |")
        print(f"server peak RSS (VmHWM): {srv.peak_rss_kb() / 1024:.1f} MB")
        ut, st, cut, cst = srv.cpu_seconds()
        print(f"server CPU: {ut:.2f} s user, {st:.2f} s sys; its step and git processes: "
              f"{cut:.2f} s user, {cst:.2f} s sys; load average after: "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
