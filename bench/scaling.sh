#!/usr/bin/env bash
# bench/scaling.sh OUTDIR — how `infl rank` scales with the training set size N and
# the number of queries M, for two model widths: wall time and peak resident memory
# (getrusage through /usr/bin/time) of each run, on synthetic data (`infl synth`).
#
#   bench/scaling.sh OUTDIR            full grid (about 15-25 minutes on 2 cores)
#   QUICK=1 bench/scaling.sh OUTDIR    a small grid (seconds), to check the script
#
# Environment: INFL (the infl binary, default build/infl), PLOT (the plot_scaling
# binary, default: beside INFL), NS, MS, MODELS, METHODS (space-separated lists
# overriding the grid), GRADDOT_MODELS (models graddot also runs on; default the
# first), SKIP (N:M pairs left out, default 1000000:1000, the largest and slowest
# combination: about 4 of the 25 minutes each on 2 cores), SEED.
#
# Outputs in OUTDIR: scaling.csv (method,model,n,m,checkpoints,seconds,rss_mb; the
# model as 784-256-128-10),
# scaling.md (a Markdown table), scaling.png (time and memory against N, log axes).
# The models are trained for one epoch on 10^4 synthetic rows (two checkpoints), so
# that TracIn sums over 2 checkpoints; ranking cost does not depend on the training.
set -euo pipefail

OUT=${1:?usage: bench/scaling.sh OUTDIR}
HERE=$(cd "$(dirname "$0")/.." && pwd)
INFL=${INFL:-$HERE/build/infl}
PLOT=${PLOT:-$(dirname "$INFL")/plot_scaling}
SEED=${SEED:-1}
if [[ -n "${QUICK:-}" ]]; then
  NS=${NS:-"2000 8000"}; MS=${MS:-"1 10"}; MODELS=${MODELS:-"784,32,10 784,64,64,10"}
else
  NS=${NS:-"10000 100000 1000000"}; MS=${MS:-"1 10 100 1000"}; MODELS=${MODELS:-"784,256,128,10 784,512,512,10"}
fi
METHODS=${METHODS:-"tracin graddot"}
SKIP=${SKIP-"1000000:1000"}
GRADDOT_MODELS=${GRADDOT_MODELS:-${MODELS%% *}}
TIME=/usr/bin/time
[[ -x "$INFL" ]] || { echo "scaling.sh: no infl binary at $INFL (set INFL=...)" >&2; exit 2; }
[[ -x "$TIME" ]] || { echo "scaling.sh: needs GNU time at $TIME (apt-get install time)" >&2; exit 2; }
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/infl-scaling.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
maxm=0; for m in $MS; do (( m > maxm )) && maxm=$m; done

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---- one small training set and a run per model (2 checkpoints) ----
"$INFL" synth -o "$WORK/train.h5" --n 10000 --d 784 --classes 10 --test 0 --seed "$SEED" --quiet
declare -A RUN
for model in $MODELS; do
  RUN[$model]="$WORK/run-${model//,/-}.h5"
  "$INFL" train --data "$WORK/train.h5:/train" --layers "$model" --epochs 1 --batch 128 --lr 0.05 \
    --checkpoint-every 40 --seed "$SEED" -o "${RUN[$model]}" --quiet >/dev/null
done

CSV="$OUT/scaling.csv"
echo "method,model,n,m,checkpoints,seconds,rss_mb" >"$CSV"
t_start=$(date +%s)
for n in $NS; do
  data="$WORK/data-$n.h5"
  log "synth N=$n"
  "$INFL" synth -o "$data" --n "$n" --d 784 --classes 10 --test "$maxm" --seed "$SEED" --quiet
  for model in $MODELS; do
    for method in $METHODS; do
      if [[ $method == graddot && " $GRADDOT_MODELS " != *" $model "* ]]; then continue; fi
      ck=2; [[ $method == graddot ]] && ck=1
      for m in $MS; do
        if [[ " $SKIP " == *" $n:$m "* ]]; then continue; fi
        "$TIME" -f "%e %M" -o "$WORK/time.txt" "$INFL" rank --run "${RUN[$model]}" --train "$data:/train" \
          --query "$data:/test[0:$m]" --method "$method" --top 10 --quiet >/dev/null
        read -r secs kb <"$WORK/time.txt"
        rss=$(awk -v k="$kb" 'BEGIN { printf "%.1f", k / 1024 }')
        echo "$method,${model//,/-},$n,$m,$ck,$secs,$rss" >>"$CSV"
        log "$method $model N=$n M=$m: ${secs} s, ${rss} MB"
      done
    done
  done
  rm -f "$data"
done
total=$(( $(date +%s) - t_start ))

# ---- the table ----
MD="$OUT/scaling.md"
{
  echo "| method | model | M | N = $(echo $NS | sed 's/ / | N = /g') |"
  printf '|---|---|---|'; for n in $NS; do printf -- '---|'; done; echo
  awk -F, -v ns="$NS" '
    NR > 1 { key = $1 "|" $2 "|" $4; if (!(key in seen)) { seen[key] = 1; order[++k] = key }
             cell[key "|" $3] = sprintf("%.2f s, %.0f MB", $6, $7) }
    END { n = split(ns, N, " ")
          for (i = 1; i <= k; i++) { split(order[i], p, "|"); line = "| " p[1] " | " p[2] " | " p[3] " |"
            for (j = 1; j <= n; j++) { c = cell[order[i] "|" N[j]]; line = line " " (c == "" ? "–" : c) " |" }
            print line } }' "$CSV"
  echo
  [[ -n "$SKIP" ]] && echo "Left out (N:M): $SKIP."
  echo "Each cell: wall time of the whole \`infl rank\` (queries, streaming the train split from HDF5, top-10 merge) and its peak resident memory (GNU time, ru_maxrss). Total $total s."
} >"$MD"
cat "$MD"

if [[ -x "$PLOT" ]]; then
  "$PLOT" "$CSV" "$OUT/scaling.png"
else
  echo "scaling.sh: no plot_scaling binary at $PLOT: no picture" >&2
fi
