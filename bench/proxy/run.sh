#!/usr/bin/env bash
# The proxy benchmark of the Deploy issue (section 9): the same tiny upstream reached directly,
# through nginx (1 worker) and through Ouro's proxy (1 thread). The load generator runs on one
# core, everything under test (upstream + proxy) on the other.
#
#   cargo build --release -p ouro-deploy --examples
#   bench/proxy/run.sh            # DURATION=10s CONNECTIONS=50 LOAD_CPU=0 SUT_CPU=1
#
# Needs wrk and nginx; oha (with --latency-correction) for the fixed-rate latency runs.
set -euo pipefail

. "$(dirname "$0")/common.sh"
duration="${DURATION:-10s}"
# The upstream on 9001, nginx on 9002, Ouro on 9003.
start_targets 9001 wrk

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "# wrk -t1 -c$connections -d$duration (load on cpu $load_cpu, upstream and proxy on cpu $sut_cpu)"

# Requests per second and latency percentiles of one wrk run.
run_wrk() {
    taskset -c "$load_cpu" wrk -t1 -c"$connections" -d"$duration" --latency "$1" >"$work/wrk.out"
    local rps p50 p99
    rps="$(awk '/^Requests\/sec/ {print $2}' "$work/wrk.out")"
    p50="$(awk '$1 == "50%" {print $2}' "$work/wrk.out")"
    p99="$(awk '$1 == "99%" {print $2}' "$work/wrk.out")"
    echo "$rps $p50 $p99"
}

declare -A max
printf '| %-8s | %-12s | %12s | %8s | %8s |\n' body target 'req/s' p50 p99
printf '|----------|--------------|--------------|----------|----------|\n'
for path in / /4k; do
    body=$([ "$path" = / ] && echo 13B || echo 4KiB)
    for t in direct:9001 nginx:9002 ouro:9003; do
        name="${t%%:*}"
        port="${t##*:}"
        taskset -c "$load_cpu" wrk -t1 -c"$connections" -d2s "http://127.0.0.1:$port$path" >/dev/null
        read -r rps p50 p99 < <(run_wrk "http://127.0.0.1:$port$path")
        max["$name$path"]="$rps"
        printf '| %-8s | %-12s | %12s | %8s | %8s |\n' "$body" "$name" "$rps" "$p50" "$p99"
    done
done

if command -v oha >/dev/null; then
    echo
    echo "# oha at fixed rates (50% and 80% of nginx's maximum), latency corrected"
    printf '| %-8s | %-6s | %-6s | %10s | %10s | %10s |\n' body rate target p50 p99 p99.9
    for path in / /4k; do
        body=$([ "$path" = / ] && echo 13B || echo 4KiB)
        nginx_max="${max[nginx$path]%.*}"
        for share in 50 80; do
            rate=$((nginx_max * share / 100))
            for t in nginx:9002 ouro:9003; do
                name="${t%%:*}"
                port="${t##*:}"
                taskset -c "$load_cpu" oha --no-tui --latency-correction -z "$duration" -q "$rate" \
                    -c "$connections" --output-format json "http://127.0.0.1:$port$path" >"$work/oha.json"
                read -r p50 p99 p999 < <(python3 -c '
import json, sys
p = json.load(open(sys.argv[1]))["latencyPercentiles"]
print(" ".join("%.3fms" % (p[k] * 1000) for k in ("p50", "p99", "p99.9")))' "$work/oha.json")
                printf '| %-8s | %-6s | %-6s | %10s | %10s | %10s |\n' "$body" "$rate" "$name" "$p50" "$p99" "$p999"
            done
        done
    done
else
    echo
    echo "# oha is not installed: the fixed-rate latency runs (50% and 80% of nginx's maximum) were skipped"
fi
