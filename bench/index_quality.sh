#!/usr/bin/env bash
# How well a gradient index's projected grad-dot matches the exact one as the projected
# width k grows (JL: the error falls like 1/sqrt(k)), on the README's 784-256-128-10 MLP
# (final checkpoint) over the first 5,000 Fashion-MNIST training images and 100 test
# queries: `infl compare` of the exact scores against the index's, for rademacher
# projections of k = 64 to 2048 and LoGra's kron projections of 8x8 to 64x64 per layer,
# with the index's build time and bytes per example.
#   bash bench/index_quality.sh OUTDIR [RUN.h5 DATA.h5]   (default: OUTDIR/run.h5, OUTDIR/fmnist.h5 as bench/lds.sh makes them)
set -euo pipefail
out=${1:?usage: bench/index_quality.sh OUTDIR [RUN.h5 DATA.h5]}
cd "$(dirname "$0")/.."
B=${INFL:-build/infl}
run=${2:-$out/run.h5}
data=${3:-$out/fmnist.h5}
T="$data:/train[0:5000]"
Q="$data:/test[0:100]"
mkdir -p "$out/quality"
q="$out/quality"
[ -f "$q/exact.h5" ] || $B rank --run "$run" --train "$T" --query "$Q" --method graddot -o "$q/exact.h5" --save-scores --force -q > /dev/null
echo "| projection | k | bytes/example | index s | Pearson | Spearman | top-10 overlap |" > "$q/table.md"
echo "|---|---|---|---|---|---|---|" >> "$q/table.md"
one() {  # name, then index options
  local name=$1; shift
  local s=$(date +%s.%N)
  $B index --run "$run" --train "$T" --checkpoints final -o "$q/$name.h5" --dtype float32 --force -q "$@" > "$q/$name.txt"
  local dt=$(echo "$(date +%s.%N) - $s" | bc)
  $B rank --index "$q/$name.h5" --query "$Q" --method graddot -o "$q/s_$name.h5" --save-scores --force -q > /dev/null
  $B compare "$q/exact.h5" "$q/s_$name.h5" > "$q/c_$name.txt"
  local k=$(sed -n 's/.*k = \([0-9]*\).*/\1/p' "$q/$name.txt") bpe=$(sed -n 's/.*: \([0-9]*\) bytes per example.*/\1/p' "$q/$name.txt")
  local p=$(sed -n 's/.*pearson \([0-9.-]*\).*/\1/p' "$q/c_$name.txt") sp=$(sed -n 's/.*spearman \([0-9.-]*\).*/\1/p' "$q/c_$name.txt")
  local t10=$(sed -n 's/.*top-10 overlap \([0-9.]*\).*/\1/p' "$q/c_$name.txt")
  echo "| $* | $k | $bpe | $(printf %.1f "$dt") | $p | $sp | $t10 |" >> "$q/table.md"
}
for k in 64 256 1024 2048; do one rad$k --projection rademacher --dim $k; done
for d in 8 16 32 64; do one kron$d --projection kron --kron ${d}x$d; done
cat "$q/table.md"
