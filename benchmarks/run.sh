#!/usr/bin/env bash
# Goal: run minitrain's benchmarks the way benchmarks/RESULTS.md was produced, into one log.
#
#   benchmarks/run.sh [BUILD_DIR] [--threads N] [--rounds N] [--all] [--max-load X] [--wait S]
#
# Builds bench_ops and bench_train_step in BUILD_DIR (default: build, Release), waits up to --wait seconds
# (default 600) for the 1-minute load average to drop below --max-load (default 2.5; the numbers are
# wall-clock and a shared machine distorts them), then runs bench_ops and the bench_train_step driver
# (minitrain and PyTorch alternating, --rounds times) and writes everything to BUILD_DIR/bench-<date>.log.
# OMP_WAIT_POLICY: kept when set; otherwise PASSIVE for both programs (and both implementations) when the
# load is still above --max-load after waiting, the runtimes' default otherwise.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
build="$root/build"
if [[ $# -gt 0 && "$1" != --* ]]; then build="$1"; shift; fi
threads=2 rounds=3 all="" max_load=2.5 wait_s=600
while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --all) all="--all"; shift ;;
    --max-load) max_load="$2"; shift 2 ;;
    --wait) wait_s="$2"; shift 2 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 1 ;;
  esac
done

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target bench_ops bench_train_step -j2

load() { cut -d' ' -f1 /proc/loadavg; }
waited=0
while awk -v l="$(load)" -v m="$max_load" 'BEGIN { exit !(l >= m) }' && [[ $waited -lt $wait_s ]]; do
  sleep 10; waited=$((waited + 10))
done

# Still loaded: spinning OpenMP threads would burn the time slices the working threads need.
if [[ -z "${OMP_WAIT_POLICY:-}" ]] && awk -v l="$(load)" -v m="$max_load" 'BEGIN { exit !(l >= m) }'; then
  export OMP_WAIT_POLICY=PASSIVE
fi

log="$build/bench-$(date +%Y%m%d-%H%M%S).log"
{
  echo "# $(date -Is)  load $(cat /proc/loadavg)  (waited ${waited}s for load < $max_load)  OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset}"
  echo "# git $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD -- include || echo ' + uncommitted changes under include/')"
  "$build/bench_ops" --threads "$threads"
  echo
  "$build/bench_train_step" --threads "$threads" --rounds "$rounds" $all
} 2>&1 | tee "$log"
echo "log: $log"
