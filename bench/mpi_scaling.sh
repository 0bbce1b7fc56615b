#!/usr/bin/env bash
# mpi_scaling.sh — strong scaling of `mpirun -np R infl rank|fit` (host/cli/mpi): the same
# job on 1, 2, ... processes of one thread each, against the ceilings measured in the same
# run: perfect scaling (T1 / R) and one process with R threads (OpenMP and BLAS over the
# same cores). Checks on the way that every R ranks the same top-k as one process.
#
#   bash bench/mpi_scaling.sh [RUN.h5] [DATA.h5] [OUTDIR]
#
# Defaults: /work/data/run.h5 (784-256-128-10, 5 checkpoints), /work/data/fmnist.h5
# (60,000 training rows), bench/results. Writes OUTDIR/DATE-mpi-scaling-cpu-epyc-2core.json
# and .md (Markdown). Env: INFL (the binary, default build/infl), NPS (process counts,
# default "1 2"), REPS (runs per figure, the median kept; default 3), QUERIES (default 16),
# SHARD (rows per shard, default 4096: fit gives each process whole shards, so the
# 60,000 rows need more than the default 3 shards to spread), MPIEXEC (default mpiexec).
# Wall times include mpiexec's start (measured alone as `infl --version`).
set -euo pipefail
run=${1:-/work/data/run.h5} data=${2:-/work/data/fmnist.h5} out=${3:-bench/results}
B=$(realpath "${INFL:-build/infl}")
NPS=${NPS:-1 2} REPS=${REPS:-3} QUERIES=${QUERIES:-16} SHARD=${SHARD:-4096} MPIEXEC=${MPIEXEC:-mpiexec}
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
log="$tmp/times.txt"
: > "$log"

# one figure: label, processes (0: one process without mpiexec), threads, then infl's arguments;
# appends "label np threads rep wall_s | infl's summary line" and keeps rank's table
measure() {
    local label=$1 np=$2 th=$3
    shift 3
    local pre=()
    [ "$np" -gt 0 ] && pre=("$MPIEXEC" --oversubscribe -np "$np")
    for rep in $(seq 1 "$REPS"); do
        local t0 t1 line
        t0=$(date +%s.%N)
        line=$("${pre[@]}" "$B" "$@" --threads "$th" -q --force > "$tmp/$label.out" 2>&1 && head -1 "$tmp/$label.out")
        t1=$(date +%s.%N)
        echo "$label $np $th $rep $(echo "$t1 - $t0" | bc) | $line" >> "$log"
    done
}

fac="$tmp/factors.h5"
"$B" fit --run "$run" --data "$data:/train" -o "$fac" -q --force --threads 1
RANK=(rank --run "$run" --train "$data:/train" --query "$data:/test[0:$QUERIES]" --top 10 --shard "$SHARD")
FIT=(fit --run "$run" --data "$data:/train" --shard "$SHARD" -o "$tmp/f.h5")
measure start 2 1 --version
for np in $NPS; do
    p=$np
    [ "$np" = 1 ] && p=0  # one process: no mpiexec
    measure "tracin_np$np" "$p" 1 "${RANK[@]}" --method tracin
    measure "ekfac_np$np" "$p" 1 "${RANK[@]}" --method ekfac --factors "$fac"
    measure "fit_np$np" "$p" 1 "${FIT[@]}"
    # the ranking tables (all but the summary line with its seconds) equal one process's
    for m in tracin ekfac; do
        if ! diff -q <(tail -n +2 "$tmp/${m}_np1.out") <(tail -n +2 "$tmp/${m}_np$np.out") > /dev/null; then
            echo "mpi_scaling: $m with $np processes ranks differently from one process" >&2
            exit 1
        fi
    done
    if [ "$np" -gt 1 ]; then  # the ceiling of one process on np threads
        measure "tracin_threads$np" 0 "$np" "${RANK[@]}" --method tracin
        measure "ekfac_threads$np" 0 "$np" "${RANK[@]}" --method ekfac --factors "$fac"
        measure "fit_threads$np" 0 "$np" "${FIT[@]}"
    fi
done

stamp=$(date +%Y-%m-%d)
python3 - "$log" "$out/$stamp-mpi-scaling-cpu-epyc-2core" "$NPS" "$QUERIES" "$SHARD" "$run" "$data" <<'EOF'
import json, re, statistics, sys
log, base, nps, Q, shard, run, data = sys.argv[1:8]
nps = [int(n) for n in nps.split()]
rows = {}
for line in open(log):
    head, _, summary = line.partition(" | ")
    label, np, th, rep, wall = head.split()
    rows.setdefault(label, []).append((float(wall), summary.strip()))
def med(label):
    return statistics.median(w for w, _ in rows[label]) if label in rows else None
def inner(label):
    # infl's own seconds: rank's scoring, fit's three phases
    s = rows[label][0][1] if label in rows else ""
    m = re.search(r"([\d.]+) s scoring", s)
    if m: return float(m.group(1))
    m = re.findall(r"([\d.]+) s", s)
    return sum(float(x) for x in m) if m else None
start = med("start")
res = {"machine": "AMD EPYC 7B13, 2 cores, shared with other sessions (timings noisy)",
       "run": run, "data": data, "queries": int(Q), "shard_rows": int(shard), "reps": len(rows["start"]),
       "mpiexec_start_s": start, "jobs": {}}
md = ["# Strong scaling of `mpirun -np R infl` (CPU, AMD EPYC 7B13, 2 cores, shared)", "",
      f"{run} on {data} (60,000 training rows), {Q} queries, shards of {shard} rows, one thread per process; "
      f"median of {res['reps']} runs. mpiexec's own start (`infl --version` on 2 processes): {start:.2f} s, "
      "included in the wall times. The machine has 2 cores shared with other sessions: the figures are noisy, "
      "and 2 processes on 2 cores is all the scaling it can show.", "",
      "| job | R | wall s | infl s | speed-up (wall) | efficiency | one process, R threads: wall s |",
      "|---|---|---|---|---|---|---|"]
for job in ["tracin", "ekfac", "fit"]:
    t1 = med(f"{job}_np1")
    res["jobs"][job] = []
    for n in nps:
        w, i = med(f"{job}_np{n}"), inner(f"{job}_np{n}")
        th = med(f"{job}_threads{n}") if n > 1 else None
        e = {"processes": n, "wall_s": w, "infl_s": i, "speedup": t1 / w, "efficiency": t1 / w / n,
             "threads_wall_s": th}
        res["jobs"][job].append(e)
        md.append(f"| {job} | {n} | {w:.2f} | {i if i is not None else float('nan'):.2f} | {t1 / w:.2f}x | "
                  f"{100 * t1 / w / n:.0f}% | {'%.2f' % th if th else '-'} |")
md += ["", "infl s: rank's scoring seconds (rank 0's), fit's covariance + eigendecomposition + eigenvalue-correction "
       "seconds, as the command prints them. The top-k tables of every R equal one process's (checked by the script)."]
json.dump(res, open(base + ".json", "w"), indent=1)
open(base + ".md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
EOF
