#!/usr/bin/env python3
"""Times one-commit pushes to several remotes in turn (A, B, C, A, B, C, ...), so that a slow
patch of the machine hits every contender alike; hyperfine runs each command's batch in a row.

Usage: bench/push_interleaved.py ROUNDS NAME=CLONE_DIR [NAME=CLONE_DIR ...]

Each round makes a commit in each clone (not timed) and times `git push -q origin HEAD:main`.
Prints per contender the median, quartiles and min in ms, and each one's median ratio to the
last contender (the limit). Prints figures; never fails on timing.
"""
import statistics
import subprocess
import sys
import time


def main():
    rounds = int(sys.argv[1])
    contenders = [a.split("=", 1) for a in sys.argv[2:]]
    times = {name: [] for name, _ in contenders}
    for r in range(rounds):
        for name, clone in contenders:
            with open(f"{clone}/bench.txt", "w") as f:
                f.write(f"{time.time_ns()} {r}\n")
            subprocess.run(["git", "-C", clone, "add", "bench.txt"], check=True)
            subprocess.run(["git", "-C", clone, "commit", "-qm", "bench"], check=True)
            t = time.perf_counter()
            subprocess.run(["git", "-C", clone, "push", "-q", "origin", "HEAD:main"], check=True)
            times[name].append((time.perf_counter() - t) * 1000)
    limit = statistics.median(times[contenders[-1][0]])
    for name, _ in contenders:
        v = sorted(times[name])
        q = statistics.quantiles(v, n=4)
        med = statistics.median(v)
        print(f"{name:14} median {med:6.1f} ms  quartiles {q[0]:6.1f}..{q[2]:6.1f}  "
              f"min {v[0]:6.1f}  ratio to {contenders[-1][0]}: {med / limit:.2f}")


if __name__ == "__main__":
    main()
