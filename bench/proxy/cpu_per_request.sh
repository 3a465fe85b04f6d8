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

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
bin="$target/${PROFILE:-release}/examples"
rounds="${ROUNDS:-5}"
duration="${DURATION:-5s}"
connections="${CONNECTIONS:-50}"
url_path="${URL_PATH:-/}"
load_cpu="${LOAD_CPU:-0}"
sut_cpu="${SUT_CPU:-1}"
base="${BASE_PORT:-9101}"
other="${OTHER:-}"

for tool in wrk nginx taskset python3; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
for example in tiny_upstream proxy_bench; do
    [ -x "$bin/$example" ] || { echo "missing $bin/$example: cargo build --release -p ouro-deploy --examples" >&2; exit 1; }
done

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    exit 1
}

up_port=$base
nginx_port=$((base + 1))
ouro_port=$((base + 2))
other_port=$((base + 3))

taskset -c "$sut_cpu" "$bin/tiny_upstream" --listen "127.0.0.1:$up_port" >/dev/null &
pids+=($!)
sed -e "s/127.0.0.1:9001/127.0.0.1:$up_port/; s/127.0.0.1:9002/127.0.0.1:$nginx_port/" \
    "$here/nginx.conf" >"$work/nginx.conf"
taskset -c "$sut_cpu" nginx -p "$work/" -c "$work/nginx.conf" &
nginx_pid=$!
pids+=("$nginx_pid")
taskset -c "$sut_cpu" "$bin/proxy_bench" --listen "127.0.0.1:$ouro_port" \
    --upstream "127.0.0.1:$up_port" --threads 1 >/dev/null &
ouro_pid=$!
pids+=("$ouro_pid")
targets=("nginx:$nginx_port" "ouro:$ouro_port")
if [ -n "$other" ]; then
    taskset -c "$sut_cpu" "$other" --listen "127.0.0.1:$other_port" \
        --upstream "127.0.0.1:$up_port" --threads 1 >/dev/null &
    other_pid=$!
    pids+=("$other_pid")
    targets+=("other:$other_port")
fi
for t in "${targets[@]}"; do wait_port "${t##*:}"; done
wait_port "$up_port"

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
