#!/usr/bin/env bash
# The linear datamodeling score of every method on the 784-256-128-10 MLP over the
# 60,000 Fashion-MNIST training images (the README's model and training), 100 test
# queries, and models retrained on random halves. Resumable: the state file keeps the
# retrained outputs, so a second call trains nothing it already has. TRAK (infl index, rank --index) beside
# them: 9 more runs of other seeds for its ensembles.
#   bash bench/lds.sh OUTDIR [MODELS]        (default 50 models)
# QUERIES=N (default 100) takes the first N test images. sgd-influence replays the 2,345
# steps backwards with an HVP per query and step: about 20 s per query on 2 shared EPYC
# cores at load 9, twice that at load 20 (bench/results/2026-11-30-sgdinf-cpu-epyc-2core.md), so 100 queries take
# 35-70 min; its replay must run at the thread count the run was trained with (it checks).
set -euo pipefail
out=${1:?usage: bench/lds.sh OUTDIR [MODELS]}
models=${2:-50}
mkdir -p "$out"
cd "$(dirname "$0")/.."
B=${INFL:-build/infl}
[ -x $B ] || { echo "build first: cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build" >&2; exit 1; }
Q="$out/fmnist.h5:/test[0:${QUERIES:-100}]"
t() { local s=$(date +%s.%N); "$@"; echo "$(date +%s.%N) - $s" | bc > "$out/.last_seconds"; }
[ -f "$out/fmnist.h5" ] || $B import fashion-mnist -o "$out/fmnist.h5" -q
[ -f "$out/run.h5" ] || $B train --data "$out/fmnist.h5:/train" --layers 784,256,128,10 --epochs 5 --batch 128 \
  --lr 0.1 --momentum 0.9 --wd 1e-4 --seed 1 --schedule cosine --checkpoint-every 500 -o "$out/run.h5" -q
$B eval --run "$out/run.h5" --data "$out/fmnist.h5:/test" | tee "$out/eval.txt"
touch "$out/times.txt"
rank() {  # name, then rank options; a scores file already there is kept
  local name=$1; shift
  [ -f "$out/s_$name.h5" ] && return 0
  t $B rank --run "$out/run.h5" --query "$Q" -o "$out/s_$name.h5" --save-scores --force -q "$@" > /dev/null
  echo "$name $(cat "$out/.last_seconds") s: infl rank $*" >> "$out/times.txt"
}
rank tracin --method tracin
rank graddot --method graddot
if [ ! -f "$out/ekfac.h5" ]; then
  t $B fit --run "$out/run.h5" --strategy ekfac -o "$out/ekfac.h5" --force -q
  echo "fit-ekfac $(cat "$out/.last_seconds") s" >> "$out/times.txt"
fi
rank ekfac --method ekfac --factors "$out/ekfac.h5"
rank kfac --method kfac --factors "$out/ekfac.h5"
rank ekfac-r32 --method ekfac --factors "$out/ekfac.h5" --query-rank 32
rank if-ggn-cg --method if --hessian ggn --solver cg --hessian-samples 1000 --damping 0.01 --cg-iters 30
rank sgd-influence --method sgd-influence
# TRAK over gradient indexes: 10 independently trained runs (seeds 1 to 10; seed 1 is run.h5), each indexed at its
# final checkpoint by LoGra's Kronecker projection (32x32 per layer: k = 2368, float16), then TRAK over the first 1,
# 5 and 10 (its ensembles), and TRAK-1 over all 5 checkpoints of run.h5
mkdir -p "$out/trak"
for s in 2 3 4 5 6 7 8 9 10; do
  [ -f "$out/trak/run$s.h5" ] || $B train --data "$out/fmnist.h5:/train" --layers 784,256,128,10 --epochs 5 --batch 128 \
    --lr 0.1 --momentum 0.9 --wd 1e-4 --seed $s --schedule cosine --checkpoint-every 500 -o "$out/trak/run$s.h5" -q
done
ix() {  # run, name, then index options
  local run=$1 name=$2; shift 2
  [ -f "$out/trak/$name.h5" ] && return 0
  t $B index --run "$run" -o "$out/trak/$name.h5" --force -q "$@" > /dev/null
  echo "index-$name $(cat "$out/.last_seconds") s: infl index $*" >> "$out/times.txt"
}
ix "$out/run.h5" ix1 --checkpoints final --projection kron
for s in 2 3 4 5 6 7 8 9 10; do ix "$out/trak/run$s.h5" ix$s --checkpoints final --projection kron; done
ix "$out/run.h5" ix1-all --projection kron
ens() { local n=$1 l="$out/trak/ix1.h5"; for s in $(seq 2 "$n"); do l="$l,$out/trak/ix$s.h5"; done; echo "$l"; }
rank trak1 --method trak --index "$(ens 1)"
rank trak5 --method trak --index "$(ens 5)"
rank trak10 --method trak --index "$(ens 10)"
rank trak1-ck5 --method trak --index "$out/trak/ix1-all.h5"
rank graddot-ix --method graddot --index "$out/trak/ix1.h5"
rank if-ix --method if --index "$out/trak/ix1.h5"
# representer points: each row's part of the query's true-class logit (what the loss reads), of the predicted
# class's, and of the loss's first-order change (every class by -dl/dlogit)
rank representer --method representer --representer-class true
rank representer-pred --method representer
rank representer-loss --method representer --representer-class loss
t $B lds --run "$out/run.h5" --query "$Q" --state "$out/lds_state.h5" --models "$models" --fraction 0.5 --seed 1 \
  "$out"/s_tracin.h5 "$out"/s_graddot.h5 "$out"/s_ekfac.h5 "$out"/s_kfac.h5 "$out"/s_ekfac-r32.h5 \
  "$out"/s_if-ggn-cg.h5 "$out"/s_trak1.h5 "$out"/s_trak5.h5 "$out"/s_trak10.h5 "$out"/s_trak1-ck5.h5 "$out"/s_graddot-ix.h5 "$out"/s_if-ix.h5 \
  "$out"/s_representer.h5 "$out"/s_representer-pred.h5 "$out"/s_representer-loss.h5 "$out"/s_sgd-influence.h5 | tee "$out/lds.txt"
echo "lds $(cat "$out/.last_seconds") s" >> "$out/times.txt"
cat "$out/times.txt"
