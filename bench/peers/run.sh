#!/usr/bin/env bash
# infl beside its peers (Captum TracInCP, kronfluence EK-FAC) on Fashion-MNIST, end to end.
#
#   bash bench/peers/run.sh [STEP...]     STEP: build data tracin ekfac-peer ekfac-infl ekfac-checks compare
#                                         (default: all of them, in that order)
#
# Environment (defaults in brackets):
#   INFL     the infl binary [build-peers/infl; built with -DINFL_CUDA=OFF if missing]
#   PY       the venv's python [bench/peers/.venv/bin/python; see README.md to make it]
#   WORK     work folder for h5/npy/json [/tmp/peers]
#   M        queries, fmnist.h5:/test[0:M] [100]
#   TRAIN    train rows for TracIn, infl and Captum alike [fmnist.h5:/train]; e.g. 'fmnist.h5:/train[0:10000]'
#   EKFAC_TRAIN  train rows for EK-FAC (fit and scores), infl and kronfluence alike [fmnist.h5:/train[0:10000]]:
#            kronfluence's eigenvalue correction on all 60,000 rows takes 5-15 min on 2 cores
#   DAMPING  EK-FAC damping, auto (0.1 x mean lambda per layer) or a value [auto]
#   SEED     EK-FAC label-sampling seed [0]
#   FISHER   EK-FAC Fisher, true (sampled labels) or empirical (data labels: no sampling noise) [true]
#   THREADS  threads for every tool [nproc]
# Results: $WORK/results.md (Markdown table) and $WORK/compare-*.txt; times as $WORK/*.json.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
INFL=${INFL:-$ROOT/build-peers/infl}
PY=${PY:-$HERE/.venv/bin/python}
WORK=${WORK:-/tmp/peers}
M=${M:-100}
TRAIN=${TRAIN:-fmnist.h5:/train}
EKFAC_TRAIN=${EKFAC_TRAIN:-fmnist.h5:/train[0:10000]}
DAMPING=${DAMPING:-auto}
SEED=${SEED:-0}
FISHER=${FISHER:-true}
THREADS=${THREADS:-$(nproc)}
QUERY="fmnist.h5:/test[0:$M]"
export PYTHONWARNINGS=ignore PYTHONDONTWRITEBYTECODE=1 OMP_NUM_THREADS=$THREADS

mkdir -p "$WORK"
cd "$WORK"
say() { printf '\n== %s\n' "$*" >&2; }

# timed PHASE CMD... : runs CMD (stdout to PHASE.out, stderr to PHASE.err) under /usr/bin/time, which
# leaves "wall user sys" in PHASE.time; the machine's load average goes to PHASE.load
timed() {
    local phase=$1; shift
    cut -d' ' -f1-3 /proc/loadavg > "$phase.load"
    /usr/bin/time -f '%e %U %S' -o "$phase.time" "$@" > "$phase.out" 2> "$phase.err"
}

# infl_json NAME METHOD KEY=PHASE... : a times JSON like the peers' ones, from the PHASE.time files
infl_json() {
    local name=$1 method=$2; shift 2
    local phases="" cpu="" total=0 kv p wall user sys first=""
    for kv in "$@"; do
        p=${kv#*=}
        first=${first:-$p}
        read -r wall user sys < "$p.time"
        phases="$phases${phases:+, }\"${kv%%=*}\": $wall"
        cpu="$cpu${cpu:+, }\"${kv%%=*}\": $(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')"
        total=$(awk -v t="$total" -v w="$wall" 'BEGIN { printf "%.2f", t + w }')
    done
    printf '{"tool": "infl", "method": "%s", "threads": %s, "phases": {%s}, "total_s": %s, "cpu_s": {%s}, "load_avg": [%s], "what": "%s"}\n' \
        "$method" "$THREADS" "$phases" "$total" "$cpu" "$(tr ' ' ',' < "$first.load")" \
        "wall time of each infl process (start to exit: reading the run and data, streaming the train split from HDF5, writing the scores file with /scores)" \
        > "$name"
}

step_build() {
    if [ -x "$INFL" ]; then return; fi
    say "building infl in $ROOT/build-peers"
    cmake -S "$ROOT" -B "$ROOT/build-peers" -DCMAKE_BUILD_TYPE=Release -DINFL_CUDA=OFF -DINFL_TESTS=OFF
    cmake --build "$ROOT/build-peers" -j "$THREADS" --target infl
}

step_data() {
    say "data: Fashion-MNIST and a 784-256-128-10 run (3 epochs, 5 checkpoints)"
    [ -f fmnist.h5 ] || "$INFL" import fashion-mnist -o fmnist.h5
    [ -f run.h5 ] || "$INFL" train --data fmnist.h5:/train --layers 784,256,128,10 --epochs 3 --batch 128 \
        --lr 0.1 --momentum 0.9 --wd 1e-4 --seed 1 --schedule cosine --checkpoint-every 300 -o run.h5
    "$INFL" eval --run run.h5 --data fmnist.h5:/test
    "$PY" "$HERE/export.py" --run run.h5 --data fmnist.h5:/test   # must print the same loss and accuracy
}

step_tracin() {
    say "TracIn: infl, $M queries x $TRAIN (load $(cut -d' ' -f1-3 /proc/loadavg))"
    timed infl_tracin "$INFL" rank --run run.h5 --method tracin --train "$TRAIN" --query "$QUERY" \
        --threads "$THREADS" -o infl_tracin.h5 --save-scores --force
    grep -m1 'scoring' infl_tracin.out >&2 || true
    infl_json infl_tracin.json tracin score=infl_tracin
    say "TracIn: Captum TracInCP (load $(cut -d' ' -f1-3 /proc/loadavg))"
    "$PY" "$HERE/captum_tracin.py" --run run.h5 --train "$TRAIN" --query "$QUERY" --threads "$THREADS" \
        -o captum_tracin.npy --times captum_tracin.json
}

step_ekfac_peer() {
    say "EK-FAC: kronfluence, $M queries x $EKFAC_TRAIN, damping $DAMPING, $FISHER Fisher, seed $SEED (load $(cut -d' ' -f1-3 /proc/loadavg))"
    "$PY" "$HERE/kronfluence_ekfac.py" --fisher "$FISHER" --run run.h5 --train "$EKFAC_TRAIN" --query "$QUERY" --threads "$THREADS" \
        --damping "$DAMPING" --seed "$SEED" --workdir "$WORK/kronfluence" \
        -o kronfluence_ekfac.npy --times kronfluence_ekfac.json
}

step_ekfac_infl() {
    if ! "$INFL" fit --help > /dev/null 2>&1; then
        say "EK-FAC: this infl has no 'fit' command yet; skipping the infl side (rebuild and run: $0 ekfac-infl compare)"
        return 0
    fi
    say "EK-FAC: infl fit + rank, $M queries x $EKFAC_TRAIN, damping $DAMPING, $FISHER Fisher, seed $SEED (load $(cut -d' ' -f1-3 /proc/loadavg))"
    timed infl_fit "$INFL" fit --run run.h5 --data "$EKFAC_TRAIN" --strategy ekfac --fisher "$FISHER" --seed "$SEED" \
        --threads "$THREADS" -o infl_factors.h5 --force
    timed infl_ekfac "$INFL" rank --run run.h5 --method ekfac --factors infl_factors.h5 --damping "$DAMPING" \
        --train "$EKFAC_TRAIN" --query "$QUERY" --threads "$THREADS" -o infl_ekfac.h5 --save-scores --force
    cat infl_fit.err infl_ekfac.err >&2
    grep -m1 'scoring' infl_ekfac.out >&2 || true
    infl_json infl_ekfac.json ekfac fit=infl_fit score=infl_ekfac
}

# Controls for reading the EK-FAC comparison: infl's EK-FAC adds the run's weight decay to Λ + damping,
# kronfluence does not, so score once more with a copy of run.h5 whose weight_decay is 0; and fit again
# with another seed, so infl-vs-infl shows how far label sampling alone moves the scores.
step_ekfac_checks() {
    if [ ! -f infl_factors.h5 ]; then say "ekfac-checks: no infl_factors.h5 (run ekfac-infl first)"; return 0; fi
    say "EK-FAC checks: infl with weight decay 0, and infl with seed $((SEED + 1))"
    "$PY" -c 'import shutil, sys, h5py; shutil.copy("run.h5", "run_wd0.h5"); f = h5py.File("run_wd0.h5", "r+"); f["model"].attrs["weight_decay"] = 0.0; f.close()'
    timed infl_ekfac_wd0 "$INFL" rank --run run_wd0.h5 --method ekfac --factors infl_factors.h5 --damping "$DAMPING" \
        --train "$EKFAC_TRAIN" --query "$QUERY" --threads "$THREADS" -o infl_ekfac_wd0.h5 --save-scores --force
    infl_json infl_ekfac_wd0.json ekfac score=infl_ekfac_wd0
    timed infl_fit_s1 "$INFL" fit --run run.h5 --data "$EKFAC_TRAIN" --strategy ekfac --fisher "$FISHER" \
        --seed "$((SEED + 1))" --threads "$THREADS" -o infl_factors_s1.h5 --force
    timed infl_ekfac_s1 "$INFL" rank --run run.h5 --method ekfac --factors infl_factors_s1.h5 --damping "$DAMPING" \
        --train "$EKFAC_TRAIN" --query "$QUERY" --threads "$THREADS" -o infl_ekfac_s1.h5 --save-scores --force
    infl_json infl_ekfac_s1.json ekfac fit=infl_fit_s1 score=infl_ekfac_s1
}

step_compare() {
    say "compare -> $WORK/results.md"
    rm -f results.md
    "$PY" "$HERE/compare.py" --label TracIn --infl infl_tracin.h5 --infl-times infl_tracin.json \
        --peer captum_tracin.npy --peer-times captum_tracin.json --per-query --md results.md | tee compare-tracin.txt
    if [ -f infl_ekfac.h5 ] && [ -f kronfluence_ekfac.npy ]; then
        "$PY" "$HERE/compare.py" --label "EK-FAC ($FISHER Fisher, damping $DAMPING)" --infl infl_ekfac.h5 --infl-times infl_ekfac.json \
            --peer kronfluence_ekfac.npy --peer-times kronfluence_ekfac.json --per-query --md results.md \
            | tee compare-ekfac.txt
    else
        say "EK-FAC comparison skipped: need infl_ekfac.h5 (infl fit/rank --method ekfac) and kronfluence_ekfac.npy"
    fi
    if [ -f infl_ekfac_wd0.h5 ] && [ -f kronfluence_ekfac.npy ]; then
        "$PY" "$HERE/compare.py" --label "EK-FAC ($FISHER Fisher, damping $DAMPING), infl with wd 0" --infl infl_ekfac_wd0.h5 \
            --infl-times infl_ekfac_wd0.json --peer kronfluence_ekfac.npy --peer-times kronfluence_ekfac.json \
            --md results.md | tee compare-ekfac-wd0.txt
    fi
    if [ -f infl_ekfac_s1.h5 ] && [ -f infl_ekfac.h5 ]; then
        "$PY" "$HERE/compare.py" --label "EK-FAC ($FISHER Fisher, damping $DAMPING), infl seed $SEED vs seed $((SEED + 1))" \
            --infl infl_ekfac.h5 --infl-times infl_ekfac.json --peer infl_ekfac_s1.h5 --peer-name "infl seed $((SEED + 1))" \
            --peer-times infl_ekfac_s1.json --md results.md | tee compare-ekfac-seeds.txt
    fi
    cat results.md
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(build data tracin ekfac-peer ekfac-infl ekfac-checks compare)
for s in "${steps[@]}"; do
    case $s in
    build) step_build ;;
    data) step_data ;;
    tracin) step_tracin ;;
    ekfac-peer) step_ekfac_peer ;;
    ekfac-infl) step_ekfac_infl ;;
    ekfac-checks) step_ekfac_checks ;;
    compare) step_compare ;;
    *) echo "run.sh: unknown step '$s' (build data tracin ekfac-peer ekfac-infl ekfac-checks compare)" >&2; exit 2 ;;
    esac
done
