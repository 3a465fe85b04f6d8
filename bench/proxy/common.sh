# Shared by the proxy benchmarks (sourced, not run): settings, the tool checks, and the tiny
# upstream, nginx and Ouro's proxy (and OTHER, another proxy_bench build) started on the cpu under
# test with a clean-up on exit.
#
# After `start_targets TOOL...`: up_port, nginx_pid, ouro_pid, other_pid (if OTHER) and `targets`,
# a list of NAME:PORT (nginx, ouro, other). Ports: BASE_PORT (the upstream) and the next three.

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
bin="$target/${PROFILE:-release}/examples"
connections="${CONNECTIONS:-50}"
load_cpu="${LOAD_CPU:-0}"
sut_cpu="${SUT_CPU:-1}"
other="${OTHER:-}"

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

# start_targets BASE_PORT TOOL...: checks the tools and the examples, then starts everything.
start_targets() {
    local base="$1" tool example
    shift
    for tool in nginx taskset "$@"; do
        command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
    done
    for example in tiny_upstream proxy_bench; do
        [ -x "$bin/$example" ] || { echo "missing $bin/$example: cargo build --release -p ouro-deploy --examples" >&2; exit 1; }
    done
    up_port=$base
    local nginx_port=$((base + 1)) ouro_port=$((base + 2)) other_port=$((base + 3))
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
    local t
    for t in "${targets[@]}"; do wait_port "${t##*:}"; done
    wait_port "$up_port"
}
