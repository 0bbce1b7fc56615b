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
for t in build-gpu/test_cuda_* build-gpu/test_gpt build-gpu/test_lm; do
  [ -x "$t" ] || continue
  "$t" --jobs 1 --verbose > "$out/$(basename "$t").log" 2>&1
  echo "$(basename "$t"): exit $?; $(grep -c '^\[PASS\]' "$out/$(basename "$t").log") passed," \
    "$(grep -c '^\[FAIL\]' "$out/$(basename "$t").log") failed, $(grep -c '^\[SKIP\]' "$out/$(basename "$t").log") skipped" \
    >> "$out/summary.txt"
done
# The benchmarks before compute-sanitizer (the slowest step): every phase on the GPU in
# FP32 and TF32, and on this machine's CPU for the speed-up per phase.
B=build-gpu/infl
$B bench --backend cuda --json "$out/bench-cuda-fp32.json" --force > "$out/bench-cuda-fp32.md" 2>&1
echo "infl bench cuda fp32: exit $?" >> "$out/summary.txt"
INFL_PRECISION=tf32 $B bench --backend cuda --json "$out/bench-cuda-tf32.json" --force > "$out/bench-cuda-tf32.md" 2>&1
echo "infl bench cuda tf32: exit $?" >> "$out/summary.txt"
timeout 600 $B bench --backend cpu --json "$out/bench-cpu.json" --force > "$out/bench-cpu.md" 2>&1
echo "infl bench cpu: exit $?" >> "$out/summary.txt"
# TF32 against FP32 on the same scores (tracin and ekfac, 60,000 synthetic rows, 100 queries)
w="$out/tf32"; mkdir -p "$w"
$B synth -o "$w/syn.h5" --n 60000 --d 784 --classes 10 --test 100 --seed 1 --force -q &&
$B train --backend cuda --data "$w/syn.h5:/train" --layers 784,256,128,10 --epochs 1 --checkpoint-every 200 -o "$w/run.h5" --force -q &&
$B fit --backend cuda --run "$w/run.h5" -o "$w/f.h5" --force -q &&
for prec in fp32 tf32; do
  for m in tracin ekfac; do
    extra=""; [ $m = ekfac ] && extra="--factors $w/f.h5"
    INFL_PRECISION=$prec $B rank --backend cuda --run "$w/run.h5" --method $m $extra --query "$w/syn.h5:/test[0:100]" \
      -o "$w/$m-$prec.h5" --save-scores --force > "$w/$m-$prec.txt" 2>&1
  done
done &&
for m in tracin ekfac; do
  echo "$m tf32 vs fp32: $($B compare "$w/$m-fp32.h5" "$w/$m-tf32.h5" | tail -1)" >> "$out/summary.txt"
done
build-gpu/bench_train --epochs 2 --json "$out/bench_train.json" > "$out/bench_train.md" 2>&1
# the GPT's training step beside its GEMMs at their shapes, on the GPU (two sizes) and the CPU
INFL_BACKEND=cuda build-gpu/bench_gpt --json "$out/bench_gpt-cuda.json" > "$out/bench_gpt-cuda.md" 2>&1
echo "bench_gpt cuda: exit $?" >> "$out/summary.txt"
INFL_BACKEND=cuda build-gpu/bench_gpt --layers 6 --heads 8 --dim 512 --context 256 --batch 32 \
  --json "$out/bench_gpt-cuda-512.json" > "$out/bench_gpt-cuda-512.md" 2>&1
echo "bench_gpt cuda dim 512: exit $?" >> "$out/summary.txt"
INFL_BACKEND=cpu build-gpu/bench_gpt --json "$out/bench_gpt-cpu.json" > "$out/bench_gpt-cpu.md" 2>&1
# the GPT's attribution phases (per-token factors, the EK-FAC fit, scoring in both forms per layer) on the
# README's demo GPT trained for one epoch, over its first 2,000 documents
g="$out/gpt"; mkdir -p "$g"
$B import text -o "$g/fortunes.h5" --force -q &&
$B train --backend cuda --model gpt --data "$g/fortunes.h5:/train" --layers 2 --heads 4 --dim 64 --context 128 \
  --epochs 1 --batch 32 --lr 4e-3 --warmup 50 -o "$g/gpt.h5" --force -q &&
$B bench --backend cuda --run "$g/gpt.h5" --n 2000 --json "$out/bench-gpt-attrib-cuda.json" --force \
  > "$out/bench-gpt-attrib-cuda.md" 2>&1
echo "infl bench --run gpt cuda: exit $?" >> "$out/summary.txt"
build-gpu/bench_rank --n 60000 --queries 100 --reps 3 --json "$out/bench_rank.json" > "$out/bench_rank.md" 2>&1
# the gradient index on the GPU: building per projection beside the forward+backward alone and cuBLAS at
# the projection's shapes, bytes per example, rank --index against 60,000 and 1,000,000 rows beside
# cuBLAS at the scoring shapes and the read alone, peak memory (about 5 GB of /tmp for the big index)
INFL_BACKEND=cuda timeout 420 build-gpu/bench_index --reps 2 --json "$out/bench_index-cuda.json" \
  > "$out/bench_index-cuda.md" 2>&1
echo "bench_index cuda: exit $?" >> "$out/summary.txt"
# compute-sanitizer follows Criterion's forked test processes (--target-processes all)
# and exits non-zero on any error it reports (--error-exitcode).
cs=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1)
if [ -d cuda ] && ls cuda/*.cu >/dev/null 2>&1 && [ -n "$cs" ]; then
  for t in build-gpu/test_cuda_* build-gpu/test_gpt build-gpu/test_lm; do
    [ -x "$t" ] || continue
    for tool in memcheck racecheck; do
      only=()  # in test_gpt and test_lm their CUDA tests, not the CPU ones
      [ "$(basename "$t")" = test_gpt ] && only=(--filter 'gpt_cuda/*')
      [ "$(basename "$t")" = test_lm ] && only=(--filter 'lm_cuda/*')
      timeout 240 "$cs" --tool "$tool" --target-processes all --error-exitcode 99 "$t" --jobs 1 "${only[@]}" \
        > "$out/$(basename "$t").$tool.log" 2>&1
      echo "$(basename "$t") $tool: exit $? ($(grep -m1 'ERROR SUMMARY' "$out/$(basename "$t").$tool.log"))" \
        >> "$out/summary.txt"
    done
  done
else
  echo "no CUDA backend built or no compute-sanitizer: compute-sanitizer not run" >> "$out/summary.txt"
fi
cat "$out/summary.txt"
