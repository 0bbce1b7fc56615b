#!/usr/bin/env bash
# infl beside kronfluence on infl's GPT: EK-FAC over token documents (fortunes), end to end.
#
#   bash bench/peers/run_gpt.sh [STEP...]   STEP: build data check ekfac-peer ekfac-infl compare
#                                           (default: all of them, in that order)
#
# Environment (defaults in brackets):
#   INFL     the infl binary [build-peers/infl; built with -DINFL_CUDA=OFF if missing]
#   PY       the venv's python [bench/peers/.venv/bin/python; see README.md to make it]
#   WORK     work folder for h5/npy/json [/tmp/peers]
#   M        queries, fortunes.h5:/test[0:M] [8]
#   TRAIN    train documents for the factors and the scores, infl and kronfluence alike
#            [fortunes.h5:/train[0:2000]]
#   DAMPING  EK-FAC damping, a value or auto (0.1 x mean lambda per layer) [1e-3]
#   FISHER   empirical (the data's next tokens) or true (targets sampled from the model) [empirical]
#   SEED     true Fisher's sampling seed [0]
#   THREADS  threads for every tool [2]
# The run: 2 blocks, 4 heads, dim 64, context 128, one epoch of fortunes (about 40-80 s on 2 cores).
# Results: $WORK/gpt-results.md (Markdown table) and $WORK/gpt-compare-ekfac.txt; times as $WORK/*.json.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
INFL=${INFL:-$ROOT/build-peers/infl}
PY=${PY:-$HERE/.venv/bin/python}
WORK=${WORK:-/tmp/peers}
M=${M:-8}
TRAIN=${TRAIN:-fortunes.h5:/train[0:2000]}
DAMPING=${DAMPING:-1e-3}
FISHER=${FISHER:-empirical}
SEED=${SEED:-0}
THREADS=${THREADS:-2}
QUERY="fortunes.h5:/test[0:$M]"
TAG="gpt_ekfac_${FISHER}_d${DAMPING}"
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
        "wall time of each infl process (start to exit: reading the run and data, streaming the train documents from HDF5, writing the factors or the scores file with /scores)" \
        > "$name"
}

step_build() {
    if [ -x "$INFL" ]; then return; fi
    say "building infl in $ROOT/build-peers"
    cmake -S "$ROOT" -B "$ROOT/build-peers" -DCMAKE_BUILD_TYPE=Release -DINFL_CUDA=OFF -DINFL_TESTS=OFF
    nice cmake --build "$ROOT/build-peers" -j "$THREADS" --target infl
}

step_data() {
    say "data: fortunes and a small GPT (2 blocks, 4 heads, dim 64, context 128, 1 epoch)"
    [ -f fortunes.h5 ] || "$INFL" import text -o fortunes.h5
    [ -f gpt.h5 ] || nice "$INFL" train --model gpt --data fortunes.h5:/train --layers 2 --heads 4 --dim 64 \
        --context 128 --epochs 1 --batch 32 --lr 4e-3 --warmup 50 --threads "$THREADS" -o gpt.h5
}

# export_gpt.py's loss per token against infl's, on the test split and on the train documents.
# infl eval prints four decimals; eval_digits (linked here as the build links infl, when $INFL sits in
# its CMake build folder) prints infl_eval's result with nine digits.
step_check() {
    local bdir digits="" ref
    rm -f gpt-check.txt
    bdir=$(cd "$(dirname "$INFL")" && pwd)
    # link eval_digits.o the way the build links infl (its link.txt, main.c's object swapped for ours)
    if [ -f "$bdir/CMakeFiles/infl.dir/link.txt" ] && [ -f "$ROOT/include/infl.h" ]; then
        cc -O1 -std=c11 -I "$ROOT/include" -c "$HERE/eval_digits.c" -o "$WORK/eval_digits.o" &&
            (cd "$bdir" && sh -c "$(sed -e "s#@CMakeFiles/infl.dir/objects1#$WORK/eval_digits.o#" \
                -e "s#CMakeFiles/infl.dir/host/cli/main.c.o#$WORK/eval_digits.o#" \
                -e "s#-o infl #-o $WORK/eval_digits #" CMakeFiles/infl.dir/link.txt)") && digits=$WORK/eval_digits ||
            say "could not link eval_digits against $bdir; checking against infl eval's four decimals"
    fi
    for ref in fortunes.h5:/test "$TRAIN"; do
        say "loss check on $ref: infl vs export_gpt.py"
        "$INFL" eval --run gpt.h5 --data "$ref" --threads "$THREADS" 2> /dev/null | tee check-infl.txt
        [ -n "$digits" ] && "$digits" gpt.h5 "$ref" final "$THREADS" | tee check-digits.txt
        "$PY" "$HERE/export_gpt.py" --run gpt.h5 --data "$ref" --threads "$THREADS" | tail -1 | tee check-py.txt
        # relative difference of the loss per token (the nine-digit one where there is one)
        local a b
        a=$(grep -o 'loss [0-9.e+-]*' "$([ -n "$digits" ] && echo check-digits.txt || echo check-infl.txt)" | head -1 | cut -d' ' -f2)
        b=$(grep -o 'loss [0-9.e+-]*' check-py.txt | head -1 | cut -d' ' -f2)
        awk -v a="$a" -v b="$b" -v d="${digits:+9 digits}" 'BEGIN {
            r = (a > b ? a - b : b - a) / a; tol = d != "" ? 1e-5 : 5e-5
            printf "loss per token: infl %s, export_gpt.py %s, relative difference %.2e (%s)\n", a, b, r, r <= tol ? "ok" : "TOO LARGE"
            exit r <= tol ? 0 : 1 }' | tee -a gpt-check.txt
    done
}

step_ekfac_peer() {
    say "EK-FAC: kronfluence, $M queries x $TRAIN, $FISHER Fisher, damping $DAMPING (load $(cut -d' ' -f1-3 /proc/loadavg))"
    nice "$PY" "$HERE/kronfluence_gpt.py" --run gpt.h5 --train "$TRAIN" --query "$QUERY" --fisher "$FISHER" \
        --damping "$DAMPING" --seed "$SEED" --threads "$THREADS" --workdir "$WORK/kronfluence-gpt" \
        -o "kfl_$TAG.npy" --times "kfl_$TAG.json"
}

step_ekfac_infl() {
    say "EK-FAC: infl fit + rank, $M queries x $TRAIN, $FISHER Fisher, damping $DAMPING (load $(cut -d' ' -f1-3 /proc/loadavg))"
    if ! timed infl_fit_gpt nice "$INFL" fit --run gpt.h5 --data "$TRAIN" --strategy ekfac --fisher "$FISHER" \
        --seed "$SEED" --threads "$THREADS" -o infl_gpt_factors.h5 --force; then
        cat infl_fit_gpt.err >&2
        if grep -q 'not built yet' infl_fit_gpt.err; then
            say "EK-FAC: this infl cannot fit a GPT yet; skipping the infl side"
            return 0
        fi
        return 1
    fi
    timed infl_rank_gpt nice "$INFL" rank --run gpt.h5 --method ekfac --factors infl_gpt_factors.h5 --damping "$DAMPING" \
        --train "$TRAIN" --query "$QUERY" --threads "$THREADS" -o "infl_$TAG.h5" --save-scores --force
    cat infl_fit_gpt.err infl_rank_gpt.err >&2
    infl_json "infl_$TAG.json" ekfac fit=infl_fit_gpt score=infl_rank_gpt
}

step_compare() {
    if [ ! -f "infl_$TAG.h5" ] || [ ! -f "kfl_$TAG.npy" ]; then
        say "compare skipped: need infl_$TAG.h5 (ekfac-infl) and kfl_$TAG.npy (ekfac-peer)"
        return 0
    fi
    say "compare -> $WORK/gpt-results.md"
    "$PY" "$HERE/compare.py" --label "GPT EK-FAC ($FISHER Fisher, damping $DAMPING)" --infl "infl_$TAG.h5" \
        --infl-times "infl_$TAG.json" --peer "kfl_$TAG.npy" --peer-times "kfl_$TAG.json" --per-query \
        --md gpt-results.md | tee "gpt-compare-$TAG.txt"
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(build data check ekfac-peer ekfac-infl compare)
for s in "${steps[@]}"; do
    case $s in
    build) step_build ;;
    data) step_data ;;
    check) step_check ;;
    ekfac-peer) step_ekfac_peer ;;
    ekfac-infl) step_ekfac_infl ;;
    compare) step_compare ;;
    *) echo "run_gpt.sh: unknown step '$s' (build data check ekfac-peer ekfac-infl compare)" >&2; exit 2 ;;
    esac
done
