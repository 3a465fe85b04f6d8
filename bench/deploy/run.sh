#!/usr/bin/env bash
# Blue-green switch and rollback timings on the local target (issue 8, section 9):
# a python3 HTTP service with two replicas per version behind Ouro's proxy, a keep-alive client
# sending requests back to back, ROUNDS x (deploy the other version, roll back to the warm one).
# Prints p50/max of "new version ready -> every new request answered by it" and of the rollback.
# Usage: bench/deploy/run.sh [ROUNDS]   (PROFILE=dev for a debug build)
set -euo pipefail
cd "$(dirname "$0")/../.."
profile="${PROFILE:-release}"
if [ "$profile" = release ]; then
  cargo build --release -q -p ouro-deploy --example switch_bench
  bin="${CARGO_TARGET_DIR:-target}/release/examples/switch_bench"
else
  cargo build -q -p ouro-deploy --example switch_bench
  bin="${CARGO_TARGET_DIR:-target}/debug/examples/switch_bench"
fi
command -v python3 >/dev/null || { echo "python3 is needed (the service)"; exit 2; }
echo "machine: $(nproc) cores, $(uname -r), load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin" "${1:-20}"
