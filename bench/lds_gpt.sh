#!/usr/bin/env bash
# The linear datamodeling score of every attribution method on a GPT over Debian's
# fortunes: one run, one scores file per method and setting, and one `infl lds` whose
# retrained models (random halves of the training documents) judge them all. Resumable:
# a scores file or factors file already there is kept, and the state file keeps the
# retrained outputs, so a second call trains nothing it already has.
#   bash bench/lds_gpt.sh OUTDIR [MODELS] [QUERIES]      (default 64 models, 32 queries)
# The configuration comes from the environment (defaults: the small check below):
#   DOCS   training documents, the first of /train (2000)
#   TRAIN  infl train's model and optimiser options
#   THREADS (2)
#   NO_LDS  set: make the scores and stop (to retrain in a parallel `infl lds` meanwhile)
set -euo pipefail
out=${1:?usage: bench/lds_gpt.sh OUTDIR [MODELS] [QUERIES]}
models=${2:-64}
queries=${3:-32}
docs=${DOCS:-2000}
train=${TRAIN:---layers 1 --heads 4 --dim 32 --context 64 --epochs 4 --batch 16 --lr 3e-3 --warmup 10 --checkpoint-every 100}
threads=${THREADS:-2}
mkdir -p "$out"
cd "$(dirname "$0")/.."
B=${INFL:-build/infl}
[ -x $B ] || { echo "build first: cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build" >&2; exit 1; }
D="$out/fortunes.h5"
Q="$D:/test[0:$queries]"
t() { local s=$(date +%s.%N); "$@"; echo "$(date +%s.%N) - $s" | bc > "$out/.last_seconds"; }
log() { echo "$*" >> "$out/times.txt"; }
touch "$out/times.txt"
[ -f "$D" ] || $B import text -o "$D" -q
if [ ! -f "$out/gpt.h5" ]; then
  t $B train --model gpt --data "$D:/train[0:$docs]" $train -o "$out/gpt.h5" --threads $threads -q
  log "train $(cat "$out/.last_seconds") s: infl train --model gpt --data $D:/train[0:$docs] $train"
fi
$B eval --run "$out/gpt.h5" --data "$D:/train[0:$docs]" --threads $threads | tee "$out/eval.txt"
$B eval --run "$out/gpt.h5" --data "$D:/test" --threads $threads | tee -a "$out/eval.txt"
fit() {  # name, then fit options
  local name=$1; shift
  [ -f "$out/f_$name.h5" ] && return 0
  t $B fit --run "$out/gpt.h5" -o "$out/f_$name.h5" --threads $threads -q "$@"
  log "fit-$name $(cat "$out/.last_seconds") s: infl fit $*"
}
rank() {  # name, then rank options
  local name=$1; shift
  [ -f "$out/s_$name.h5" ] && return 0
  t $B rank --run "$out/gpt.h5" --query "$Q" -o "$out/s_$name.h5" --save-scores --force --threads $threads -q "$@" > /dev/null
  log "$name $(cat "$out/.last_seconds") s: infl rank $*"
}
fit ekfac --strategy ekfac
fit ekfac-emp --strategy ekfac --fisher empirical
fit diagonal --strategy diagonal
rank graddot --method graddot
rank gradcos --method gradcos
rank tracin --method tracin
rank ekfac --method ekfac --factors "$out/f_ekfac.h5"
rank ekfac-emp --method ekfac --factors "$out/f_ekfac-emp.h5"
rank kfac --method kfac --factors "$out/f_ekfac.h5"
rank diagonal --method diagonal --factors "$out/f_diagonal.h5"
for d in ${DAMPINGS:-0.001 0.1 10}; do
  rank ekfac-d$d --method ekfac --factors "$out/f_ekfac.h5" --damping $d
done
[ -n "${NO_LDS:-}" ] && { cat "$out/times.txt"; exit 0; }  # scores only (an lds of the same state may be running)
scores=$(ls "$out"/s_*.h5)
t $B lds --run "$out/gpt.h5" --query "$Q" --state "$out/lds_state.h5" --models "$models" --fraction 0.5 --seed 1 \
  --threads $threads $scores | tee "$out/lds.txt"
log "lds $(cat "$out/.last_seconds") s: infl lds --models $models (retraining only what the state lacks)"
cat "$out/times.txt"
