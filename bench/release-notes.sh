#!/usr/bin/env bash
# Release notes for 10k commits since the last release (issue 7: <= 1 s including reading).
# Builds the ouro-release example `notes_bench` (dev profile unless PROFILE=release; minijinja and
# ouro-release are optimised in dev builds too, see Cargo.toml), then runs it RUNS times: each run
# creates a repository with N commits since a tag and prints the time to read them
# (`changes::since`, one `git log -z`), compute the version and render the default notes.
# Usage: bench/release-notes.sh [N]   (RUNS=5 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-10000}"
RUNS="${RUNS:-5}"
PROFILE="${PROFILE:-dev}"
flag=()
[ "$PROFILE" = release ] && flag=(--release)
cargo build -q -p ouro-release --example notes_bench "${flag[@]}"
dir="${CARGO_TARGET_DIR:-target}/$([ "$PROFILE" = release ] && echo release || echo debug)/examples"
for _ in $(seq "$RUNS"); do
  /usr/bin/time -f "cpu_user_s=%U cpu_sys_s=%S wall_s=%e (whole process, repository creation included)" \
    "$dir/notes_bench" "$N" 2>&1 | grep -v '^built a repository'
done
