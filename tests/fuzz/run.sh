#!/usr/bin/env bash
# tests/fuzz/run.sh: build the libFuzzer targets (tests/fuzz/<target>.cpp -> build-fuzz/fuzz_<target>, clang,
# -fsanitize=fuzzer,address,undefined) and run each for a while; exit 1 on any finding.
#
#   bash tests/fuzz/run.sh [SECONDS] [TARGET ...]   SECONDS per target (default 25), all targets by default
#
# Each target starts from the committed seeds and regression inputs (tests/fuzz/corpus/<target>/, read
# only) plus what earlier runs found (build-fuzz/corpus/<target>/, where new inputs go), with the JSON
# dictionary tests/fuzz/json.dict. A crash, a sanitizer report, a leak, an exception other than
# minitrain::Error, an input slower than 10 s or an allocation above 512 MiB is a finding: the input is
# saved as build-fuzz/findings/<target>-<kind>-<hash>; once fixed, copy it into tests/fuzz/corpus/<target>/
# so that every later run replays it. Reproduce one input: build-fuzz/fuzz_<target> FILE.
#
# A real campaign (hours, every core), one target at a time:
#   build-fuzz/fuzz_tokenizer_json build-fuzz/corpus/tokenizer_json tests/fuzz/corpus/tokenizer_json \
#     -dict=tests/fuzz/json.dict -timeout=10 -malloc_limit_mb=512 -jobs="$(nproc)" -workers="$(nproc)" \
#     -max_total_time=3600 -artifact_prefix=build-fuzz/findings/tokenizer_json-
#
# Without clang and libFuzzer (Debian: clang libclang-rt-14-dev libomp-dev, see cmake/setup.sh) the script
# skips with the reason, except under CI=true, where that is an error. JOBS sets the build's parallelism
# (default 2); BUILD the build folder (default build-fuzz).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

seconds=${1:-25}
shift || true
build=${BUILD:-build-fuzz}
jobs=${JOBS:-2}
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "run.sh: SECONDS must be a whole number, got '$seconds'" >&2; exit 2; }

unavailable() {
  if [ "${CI:-}" = "true" ]; then
    echo "run.sh: error: $1 (CI=true: fuzzing is part of CI; run 'bash cmake/setup.sh')" >&2
    exit 1
  fi
  echo "run.sh: skipped: $1 (install with 'bash cmake/setup.sh')"
  exit 0
}
cxx=${FUZZ_CXX:-$(command -v clang++ || command -v clang++-14 || true)}
[ -n "$cxx" ] || unavailable "clang++ is not installed"
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' > "$probe/p.cpp"
"$cxx" -fsanitize=fuzzer,address,undefined "$probe/p.cpp" -o "$probe/p" 2>"$probe/err" ||
  unavailable "$cxx cannot link libFuzzer with ASan/UBSan ($(head -c 300 "$probe/err"))"

mkdir -p "$build"
cmake -S . -B "$build" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=Release -DMINITRAIN_FUZZ=ON \
  -DMINITRAIN_BUILD_TESTS=OFF -DMINITRAIN_BUILD_EXAMPLES=OFF -DMINITRAIN_BUILD_BENCHMARKS=OFF \
  -DMINITRAIN_INSTALL=OFF -DMINITRAIN_CUDA=OFF > "$build/configure.log" 2>&1 ||
  { cat "$build/configure.log" >&2; exit 1; }

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in tests/fuzz/*.cpp; do targets+=("$(basename "$f" .cpp)"); done
fi
cmake --build "$build" -j"$jobs" --target "${targets[@]/#/fuzz_}"

mkdir -p "$build/findings"
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
printf '%-16s %10s %8s %8s  %s\n' target execs seconds corpus result
for t in "${targets[@]}"; do
  mkdir -p "$build/corpus/$t"
  log="$build/findings/$t.log"
  start=$(date +%s)
  rc=0
  "$build/fuzz_$t" "$build/corpus/$t" "tests/fuzz/corpus/$t" -dict=tests/fuzz/json.dict \
    -max_total_time="$seconds" -timeout=10 -malloc_limit_mb=512 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$build/findings/$t-" > "$log" 2>&1 || rc=$?
  took=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  units=$(find "$build/corpus/$t" "tests/fuzz/corpus/$t" -type f | wc -l)
  if [ "$rc" -eq 0 ]; then
    printf '%-16s %10s %8s %8s  %s\n' "$t" "${execs:-?}" "$took" "$units" ok
  else
    printf '%-16s %10s %8s %8s  %s\n' "$t" "${execs:-?}" "$took" "$units" "FINDING (exit $rc), log: $log"
    grep -E "^(==[0-9]+==ERROR|SUMMARY|fuzz finding|artifact_prefix|Test unit written)" "$log" | head -8 | sed 's/^/    /'
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "run.sh: findings in: ${failed[*]} (inputs in $build/findings/; fix, then add each to tests/fuzz/corpus/<target>/)" >&2
  exit 1
fi
