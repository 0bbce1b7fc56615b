#!/usr/bin/env bash
# fastif.sh — FastIF (Guo et al. 2020) on an MLP run: the recall of the full method's
# top-10 proponents (and bottom-10 opponents) by `--prefilter knn:K` over the inputs and
# over the penultimate activations, for several K and methods, and the time each takes
# beside the full ranking (measured in the same run, on this machine); then the
# influence-function solver's fast settings (fewer CG iterations, shallower LiSSA,
# fewer Hessian rows) against a converged reference.
#
#   bash bench/fastif.sh RUN.h5 'DATA.h5:/test[0:100]' OUTDIR [FACTORS.h5]
#
# FACTORS.h5 (infl fit) is made in OUTDIR when not given. Writes OUTDIR/fastif.md
# (Markdown tables), the JSON rankings and times.txt. Env: INFL (the binary), KS (the K
# values), METHODS, IFQUERY (the queries of the solver table; default the first 20),
# THREADS (default 1).
set -euo pipefail
run=$1 query=$2 out=$3 fac=${4:-$3/factors.h5}
B=${INFL:-build/infl}
KS=${KS:-100 500 1000 5000}
METHODS=${METHODS:-tracin graddot ekfac}
mkdir -p "$out"
[ -f "$fac" ] || "$B" fit --run "$run" -o "$fac" -q --force --threads "${THREADS:-1}"
IFQUERY=${IFQUERY:-$(echo "$query" | sed -E 's/\[[0-9:]*\]$//')[0:20]}

timed() {  # name, query, then the rank flags: the JSON ranking, wall seconds and the summary line
    local name=$1 q=$2
    shift 2
    [ -f "$out/$name.json" ] && return 0
    local t0 t1 line
    t0=$(date +%s.%N)
    line=$("$B" rank --run "$run" --query "$q" --top 10 --threads "${THREADS:-1}" -q --force --json "$out/$name.json" \
        "$@" | grep -E '^[a-z]+: [0-9]+ queries' || true)
    t1=$(date +%s.%N)
    echo "$name $(echo "$t1 - $t0" | bc) | $line" >> "$out/times.txt"
}

touch "$out/times.txt"
for m in $METHODS; do
    fl=(--method "$m")
    [ "$m" = ekfac ] && fl+=(--factors "$fac")
    timed "${m}_full" "$query" "${fl[@]}"
    for f in inputs penultimate; do
        for K in $KS; do timed "${m}_${f}_$K" "$query" "${fl[@]}" --prefilter "knn:$K" --knn-features "$f"; done
    done
done
# influence functions (Gauss-Newton): a converged CG reference and the fast settings
IF=(--method if --hessian ggn --damping 0.01)
timed if_ref "$IFQUERY" "${IF[@]}" --hessian-samples 2000 --solver cg --cg-iters 200 --cg-tol 1e-8
timed if_cg30 "$IFQUERY" "${IF[@]}" --hessian-samples 2000 --solver cg --cg-iters 30
timed if_cg10 "$IFQUERY" "${IF[@]}" --hessian-samples 2000 --solver cg --cg-iters 10
timed if_cg10_h500 "$IFQUERY" "${IF[@]}" --hessian-samples 500 --solver cg --cg-iters 10
timed if_cg3 "$IFQUERY" "${IF[@]}" --hessian-samples 2000 --solver cg --cg-iters 3
timed if_lissa300 "$IFQUERY" "${IF[@]}" --hessian-samples 2000 --solver lissa --lissa-depth 300 --lissa-scale 10
timed if_lissa100 "$IFQUERY" "${IF[@]}" --hessian-samples 2000 --solver lissa --lissa-depth 100 --lissa-scale 10
timed if_cg10_knn1000 "$IFQUERY" "${IF[@]}" --hessian-samples 2000 --solver cg --cg-iters 10 --prefilter knn:1000 \
    --knn-features penultimate

python3 - "$out" "$METHODS" <<'EOF'
import json, re, sys
out, methods = sys.argv[1], sys.argv[2].split()
times = {}
for l in open(f"{out}/times.txt"):
    name, rest = l.split(" ", 1)
    wall, line = rest.split("|", 1)
    m = re.search(r"([\d.]+) s preparing, ([\d.]+) s scoring", line)
    k = re.search(r"of which ([\d.]+) s the k-NN search.* (\d+) distinct", line)
    times[name] = dict(wall=float(wall), prep=float(m.group(1)) if m else float("nan"),
                       score=float(m.group(2)) if m else float("nan"),
                       knn=float(k.group(1)) if k else 0.0, cand=int(k.group(2)) if k else None)
def sides(name):
    q = json.load(open(f"{out}/{name}.json"))["queries"]
    return [({d["index"] for d in x["proponents"]}, {d["index"] for d in x["opponents"]}) for x in q]
def recall(ref, name):
    a, b = sides(ref), sides(name)
    n = 10 * len(a)
    return sum(len(x & y) for (x, _), (y, _) in zip(a, b)) / n, sum(len(x & y) for (_, x), (_, y) in zip(a, b)) / n
rows = []
for m in methods:
    f = times[f"{m}_full"]
    rows += [f"\n### {m}\n",
             "| prefilter | features | recall top-10 | recall bottom-10 | candidates scored | k-NN s | scoring s "
             "(k-NN incl.) | whole command s | speed-up (scoring) | speed-up (command) |",
             "|---|---|---|---|---|---|---|---|---|---|",
             f"| none (full) | — | 1.000 | 1.000 | 60000 | — | {f['score']:.2f} | {f['wall']:.2f} | 1.0× | 1.0× |"]
    for feat in ["inputs", "penultimate"]:
        for name in sorted((n for n in times if n.startswith(f"{m}_{feat}_")), key=lambda n: int(n.rsplit('_', 1)[1])):
            t = times[name]
            rt, rb = recall(f"{m}_full", name)
            rows.append(f"| knn:{name.rsplit('_', 1)[1]} | {feat} | {rt:.3f} | {rb:.3f} | {t['cand']} | {t['knn']:.2f} | "
                        f"{t['score']:.2f} | {t['wall']:.2f} | {f['score'] / t['score']:.1f}× | {f['wall'] / t['wall']:.1f}× |")
if "if_ref" in times:
    r = times["if_ref"]
    rows += ["\n### influence functions (GGN, damping 0.01): solver settings\n",
             "| settings | recall top-10 | recall bottom-10 | preparing s | scoring s | whole command s | speed-up (command) |",
             "|---|---|---|---|---|---|---|",
             f"| reference: cg 200 iterations, tol 1e-8, 2000 Hessian rows | 1.000 | 1.000 | {r['prep']:.2f} | {r['score']:.2f} | {r['wall']:.2f} | 1.0× |"]
    for name in [n for n in times if n.startswith("if_") and n != "if_ref"]:
        t = times[name]
        rt, rb = recall("if_ref", name)
        rows.append(f"| {name[3:]} | {rt:.3f} | {rb:.3f} | {t['prep']:.2f} | {t['score']:.2f} | {t['wall']:.2f} | {r['wall'] / t['wall']:.1f}× |")
open(f"{out}/fastif.md", "w").write("\n".join(rows) + "\n")
print("\n".join(rows))
EOF
