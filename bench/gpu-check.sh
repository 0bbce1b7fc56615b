#!/usr/bin/env bash
# One call on a lent GPU machine: build with CUDA, run the whole test suite, run
# compute-sanitizer (memcheck, racecheck) over the test programs, run the
# benchmarks; every log and table goes to OUTDIR.
#   bash bench/gpu-check.sh OUTDIR
# The CUDA parity suite (test_cuda_*) must run, not skip, here: the summary counts
# its passes, failures and skips. Without a device or without cuda/ the script still
# builds and measures the CPU backend, and says so in OUTDIR/summary.txt.
set -uo pipefail
out=${1:?usage: bench/gpu-check.sh OUTDIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
{
  date -u; git rev-parse --short HEAD 2>/dev/null; nvidia-smi 2>&1 | head -15; nproc
} > "$out/machine.txt" 2>&1
bash .ci/deps > "$out/deps.log" 2>&1
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DINFL_CUDA=AUTO > "$out/configure.log" 2>&1
cmake --build build-gpu -j "$(nproc)" > "$out/build.log" 2>&1 || { echo "build failed" > "$out/summary.txt"; exit 1; }
ctest --test-dir build-gpu --output-on-failure > "$out/ctest.log" 2>&1
echo "ctest: $(tail -3 "$out/ctest.log" | head -1)" > "$out/summary.txt"
for t in build-gpu/test_cuda_*; do
  [ -x "$t" ] || continue
  "$t" --jobs 1 --verbose > "$out/$(basename "$t").log" 2>&1
  echo "$(basename "$t"): exit $?; $(grep -c '^\[PASS\]' "$out/$(basename "$t").log") passed," \
    "$(grep -c '^\[FAIL\]' "$out/$(basename "$t").log") failed, $(grep -c '^\[SKIP\]' "$out/$(basename "$t").log") skipped" \
    >> "$out/summary.txt"
done
# compute-sanitizer follows Criterion's forked test processes (--target-processes all)
# and exits non-zero on any error it reports (--error-exitcode).
cs=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1)
if [ -d cuda ] && ls cuda/*.cu >/dev/null 2>&1 && [ -n "$cs" ]; then
  for t in build-gpu/test_cuda_*; do
    [ -x "$t" ] || continue
    for tool in memcheck racecheck; do
      "$cs" --tool "$tool" --target-processes all --error-exitcode 99 "$t" --jobs 1 \
        > "$out/$(basename "$t").$tool.log" 2>&1
      echo "$(basename "$t") $tool: exit $? ($(grep -m1 'ERROR SUMMARY' "$out/$(basename "$t").$tool.log"))" \
        >> "$out/summary.txt"
    done
  done
else
  echo "no CUDA backend built or no compute-sanitizer: compute-sanitizer not run" >> "$out/summary.txt"
fi
build-gpu/bench_train --epochs 2 --json "$out/bench_train.json" > "$out/bench_train.md" 2>&1
build-gpu/bench_rank --n 60000 --queries 100 --reps 3 --json "$out/bench_rank.json" > "$out/bench_rank.md" 2>&1
cat "$out/summary.txt"
