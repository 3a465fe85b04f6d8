#!/usr/bin/env bash
# CPU time per request of the proxy process, nginx vs Ouro, interleaved (nginx, ouro, nginx,
# ouro, ...). Throughput ratios move 10-30% when other work shares the cores; the CPU time a
# proxy spends per request hardly does, and it decides throughput when the proxy is CPU-bound.
#
#   cargo build --release -p ouro-deploy --examples
#   bench/proxy/cpu_per_request.sh      # ROUNDS=5 DURATION=5s CONNECTIONS=50 URL_PATH=/
#   OTHER=/path/to/older/proxy_bench bench/proxy/cpu_per_request.sh   # a third target: another build
#
# Per run: utime and stime of the proxy's processes (nginx: master + worker) from /proc/PID/stat
# before and after one wrk run, divided by the requests wrk reports. The upstream is the same
# for every target and is not counted.
set -euo pipefail

. "$(dirname "$0")/common.sh"
rounds="${ROUNDS:-5}"
duration="${DURATION:-5s}"
url_path="${URL_PATH:-/}"
start_targets "${BASE_PORT:-9101}" wrk python3

# The processes whose CPU time counts for a target.
procs() {
    case "$1" in
        nginx) echo "$nginx_pid" $(pgrep -P "$nginx_pid" || true) ;;
        ouro) echo "$ouro_pid" ;;
        other) echo "$other_pid" ;;
    esac
}

# "utime stime" in clock ticks, summed over the given pids. The command name in field 2 may hold
# spaces, so fields are counted after its closing parenthesis.
ticks() {
    local u=0 s=0 f
    for pid in "$@"; do
        f="$(sed 's/^.*) //' "/proc/$pid/stat")"
        set -- $f
        u=$((u + ${12})); s=$((s + ${13}))
    done
    echo "$u $s"
}

hz="$(getconf CLK_TCK)"
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $rounds rounds of wrk -t1 -c$connections -d$duration http://127.0.0.1:PORT$url_path per target, interleaved"
echo "# (wrk on cpu $load_cpu; upstream and proxies on cpu $sut_cpu); CPU per request in microseconds"
printf '%-6s %-6s %10s %10s %8s %8s %8s\n' round target requests 'req/s' user sys total
: >"$work/runs"
for t in "${targets[@]}"; do
    taskset -c "$load_cpu" wrk -t1 -c"$connections" -d1s "http://127.0.0.1:${t##*:}$url_path" >/dev/null
done
for round in $(seq "$rounds"); do
    for t in "${targets[@]}"; do
        name="${t%%:*}"
        port="${t##*:}"
        # shellcheck disable=SC2046
        read -r u0 s0 < <(ticks $(procs "$name"))
        taskset -c "$load_cpu" wrk -t1 -c"$connections" -d"$duration" "http://127.0.0.1:$port$url_path" >"$work/wrk.out"
        # shellcheck disable=SC2046
        read -r u1 s1 < <(ticks $(procs "$name"))
        n="$(awk '/requests in/ {print $1}' "$work/wrk.out")"
        rps="$(awk '/^Requests\/sec/ {print $2}' "$work/wrk.out")"
        if grep -q 'Non-2xx\|Socket errors' "$work/wrk.out"; then
            echo "errors in the $name run:" >&2
            cat "$work/wrk.out" >&2
        fi
        python3 - "$round" "$name" "$n" "$rps" "$((u1 - u0))" "$((s1 - s0))" "$hz" <<'EOF' | tee -a "$work/runs"
import sys
r, name, n, rps, du, ds, hz = sys.argv[1:]
us = lambda ticks: int(ticks) * 1e6 / int(hz) / int(n)
print("%-6s %-6s %10s %10s %8.2f %8.2f %8.2f" % (r, name, n, rps, us(du), us(ds), us(du) + us(ds)))
EOF
    done
done

echo
echo "# median over the rounds (microseconds of CPU per request; req/s as measured, load-dependent)"
python3 - "$work/runs" <<'EOF'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    r, name, n, rps, user, sys_, total = line.split()
    runs.setdefault(name, []).append((float(rps), float(user), float(sys_), float(total)))
print("%-6s %10s %8s %8s %8s" % ("target", "req/s", "user", "sys", "total"))
med = {}
for name, rows in runs.items():
    m = [statistics.median(col) for col in zip(*rows)]
    med[name] = m
    print("%-6s %10.0f %8.2f %8.2f %8.2f" % (name, *m))
if "nginx" in med:
    for name, m in med.items():
        if name != "nginx":
            print("%s / nginx CPU per request: %.2f (throughput bound when CPU-bound: %.2f x nginx)"
                  % (name, m[3] / med["nginx"][3], med["nginx"][3] / m[3]))
EOF
