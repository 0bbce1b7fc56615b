#!/usr/bin/env bash
# prefilter.sh — Grosse et al.'s search-space reduction on a GPT run: the recall of the
# full method's top-10 proponents (and bottom-10 opponents) by `--prefilter bm25:K` and
# by `--rerank K` after a pass at `--query-rank R`, for a few K, and the time each takes
# beside the full ranking (all measured in the same run, on this machine).
#
#   bash bench/prefilter.sh RUN.h5 FACTORS.h5 'DOCS.h5:/test[0:16]' [OUTDIR]
#
# RUN.h5 is a gpt run, FACTORS.h5 its factors (infl fit), the queries documents of a
# split. Writes OUTDIR/prefilter.md (a Markdown table) and the JSON rankings.
set -euo pipefail
run=$1 fac=$2 query=$3 out=${4:-/tmp/prefilter}
B=${INFL:-build/infl}
mkdir -p "$out"
common=(--run "$run" --query "$query" --method ekfac --factors "$fac" --top 10 --threads "${THREADS:-2}" -q --force)

timed() {  # name, then the rank flags: the JSON ranking and the seconds it took
    local name=$1
    shift
    local t0 t1
    t0=$(date +%s.%N)
    "$B" rank "${common[@]}" --json "$out/$name.json" "$@" > /dev/null
    t1=$(date +%s.%N)
    echo "$name $(echo "$t1 - $t0" | bc)" >> "$out/times.txt"
}

: > "$out/times.txt"
timed full
for K in 500 2000 5000; do timed "bm25_$K" --prefilter "bm25:$K"; done
for K in 50 200; do timed "rerank_$K" --query-rank 8 --rerank "$K"; done

python3 - "$out" <<'EOF'
import json, sys
out = sys.argv[1]
times = dict(l.split() for l in open(f"{out}/times.txt"))
def sides(name):
    q = json.load(open(f"{out}/{name}.json"))["queries"]
    return [({d["index"] for d in x["proponents"]}, {d["index"] for d in x["opponents"]}) for x in q]
full = sides("full")
rows = ["| method | recall of the full top-10 | of the bottom-10 | seconds | time saved |", "|---|---|---|---|---|"]
tf = float(times["full"])
rows.append(f"| full ekfac | 1.000 | 1.000 | {tf:.1f} | — |")
for name in [n for n in times if n != "full"]:
    s = sides(name)
    rt = sum(len(a & b) for (a, _), (b, _) in zip(full, s)) / (10 * len(full))
    rb = sum(len(a & b) for (_, a), (_, b) in zip(full, s)) / (10 * len(full))
    t = float(times[name])
    label = name.replace("bm25_", "--prefilter bm25:").replace("rerank_", "--query-rank 8 --rerank ")
    rows.append(f"| {label} | {rt:.3f} | {rb:.3f} | {t:.1f} | {100 * (1 - t / tf):.0f}% |")
open(f"{out}/prefilter.md", "w").write("\n".join(rows) + "\n")
print("\n".join(rows))
EOF
