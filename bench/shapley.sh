#!/usr/bin/env bash
# bench/shapley.sh OUT — Data Shapley's figures (bench/results/*-shapley-*.md):
#   1. TMC against exact Shapley on 10 rows (accuracy and loss utilities; convex and MLP)
#   2. TMC and G-Shapley (and KNN) on 200 rows of 7×7 Fashion-MNIST with 10% flipped labels:
#      convergence, flipped-label recall, removal curves; TMC on 500 rows; the MLP on 100
#   3. KNN-Shapley on all 60,000 rows of /work/data/fmnist-flip.h5: the inputs, and the
#      penultimate activations of /work/data/run.h5
# Needs build/infl (Release). Single runs on a shared machine: the times are noisy.
set -euo pipefail
OUT=${1:?usage: bench/shapley.sh OUT}
B=${INFL:-$(cd "$(dirname "$0")/.." && pwd)/build/infl}
mkdir -p "$OUT"
cd "$OUT"
export OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive
FLIP=${FLIP:-/work/data/fmnist-flip.h5}
RUN=${RUN:-/work/data/run.h5}
[ -f fm7f.h5 ] || $B import fashion-mnist --limit 2000 --pool 4 --flip-labels 0.1 --seed 3 -o fm7f.h5 -q
T() { /usr/bin/time -f "%e s wall, %U s user, %M KB max RSS" "$@"; }

# 1. TMC against exact on 10 rows
for u in accuracy loss; do
  for m in convex mlp; do
    T $B shapley --train 'fm7f.h5:/train[0:10]' --valid 'fm7f.h5:/test[0:500]' --utility $u --model $m \
      --method exact --curve-points 0 --csv exact-$u-$m.csv --force -q > exact-$u-$m.txt 2>&1
    T $B shapley --train 'fm7f.h5:/train[0:10]' --valid 'fm7f.h5:/test[0:500]' --utility $u --model $m \
      --method tmc --tolerance 0 --converge 0 --permutations 1000 --curve-points 0 --csv tmc-$u-$m.csv --force \
      > tmc-$u-$m.txt 2>&1
    python3 - exact-$u-$m.csv tmc-$u-$m.csv <<'PY' | tee cmp-$u-$m.txt
import csv, sys
e = {r["train_index"]: float(r["value"]) for r in csv.DictReader(open(sys.argv[1]))}
t = {r["train_index"]: (float(r["value"]), float(r["se"])) for r in csv.DictReader(open(sys.argv[2]))}
d = [abs(t[i][0] - e[i]) for i in e]
z = [abs(t[i][0] - e[i]) / t[i][1] if t[i][1] > 0 else 0 for i in e]
print("max |TMC - exact| %.2e, max se %.2e, max |diff|/se %.2f, mean |diff|/se %.2f, values %.3e..%.3e" %
      (max(d), max(v[1] for v in t.values()), max(z), sum(z) / len(z), min(e.values()), max(e.values())))
PY
  done
done

# 2. TMC and G-Shapley on 200 rows with flipped labels (valid: 500 test rows; curves: 1500 others)
T $B shapley --train 'fm7f.h5:/train[0:200]' --valid 'fm7f.h5:/test[0:500]' --test 'fm7f.h5:/test[500:2000]' \
  --method tmc --permutations 1000 --state tmc200-state.h5 -o tmc200.h5 --csv tmc200.csv --png tmc200.png \
  --force > tmc200.txt 2> tmc200.log
T $B shapley --train 'fm7f.h5:/train[0:200]' --valid 'fm7f.h5:/test[0:500]' --test 'fm7f.h5:/test[500:2000]' \
  --method gshapley --permutations 1000 -o gs200.h5 --csv gs200.csv --png gs200.png --force > gs200.txt 2> gs200.log
T $B shapley --train 'fm7f.h5:/train[0:200]' --valid 'fm7f.h5:/test[0:500]' --test 'fm7f.h5:/test[500:2000]' \
  --method knn --png knn200.png --force > knn200.txt 2>&1
# TMC on 500 rows (at most 300 permutations; resumable: run again to go on), the MLP utility on 100 rows
T $B shapley --train 'fm7f.h5:/train[0:500]' --valid 'fm7f.h5:/test[0:500]' --test 'fm7f.h5:/test[500:2000]' \
  --method tmc --permutations 300 --state tmc500-state.h5 -o tmc500.h5 --png tmc500.png > tmc500.txt 2> tmc500.log
T $B shapley --train 'fm7f.h5:/train[0:100]' --valid 'fm7f.h5:/test[0:500]' --test 'fm7f.h5:/test[500:2000]' \
  --method tmc --model mlp --permutations 100 --png mlp100.png --force > mlp100.txt 2> mlp100.log

# 3. KNN-Shapley on all 60,000 (valid: 1,000 test rows; curves: the next 2,000)
T $B shapley --train "$FLIP:/train" --valid "$FLIP:/test[0:1000]" --test "$FLIP:/test[1000:3000]" --method knn \
  -o knn60k.h5 --png knn60k.png --force > knn60k.txt 2>&1
T $B shapley --train "$FLIP:/train" --valid "$FLIP:/test[0:1000]" --test "$FLIP:/test[1000:3000]" --method knn \
  --run "$RUN" -o knn60k-pen.h5 --png knn60k-pen.png --force > knn60k-pen.txt 2>&1
echo done
