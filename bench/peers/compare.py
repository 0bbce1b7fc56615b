"""Compare infl's full score matrix with a peer's, and put the times side by side.

    python compare.py --label TracIn --infl tracin.h5 --infl-times infl_tracin.json \
        --peer captum_tracin.npy --peer-times captum_tracin.json [--md table.md] [--per-query]

infl's file is a scores HDF5 written by `infl rank ... -o s.h5 --save-scores` (/scores
float32 [M, N]); the peer's is a .npy [M, N] over the same queries and train rows.
Per query: Pearson and Spearman correlation of the N scores, the overlap of the top-10
proponents (highest scores) and of the top-10 opponents (lowest), and the least-squares
scale peer ~ s * infl. Printed: per query (with --per-query), then mean and min.
Times JSON (written by run.sh for infl, by the peer scripts for peers):
{"tool", "method", "phases": {"fit": s, "score": s}, "total_s", ...}.
--md appends a Markdown table row per comparison (with a header when the file is new).
"""

import argparse
import json
import os
import sys

import h5py
import numpy as np
from scipy import stats


def load_infl(path):
    with h5py.File(path, "r") as f:
        fmt = f.attrs.get("infl_format")
        fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
        if fmt != "scores":
            raise ValueError(f"{path}: infl_format is {fmt!r}, expected 'scores'")
        if "scores" not in f:
            raise ValueError(f"{path}: no /scores; run infl rank with -o FILE --save-scores")
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        return np.asarray(f["scores"][:], dtype=np.float64), attrs


def topk_overlap(a, b, k, largest=True):
    ia = np.argsort(-a if largest else a, kind="stable")[:k]
    ib = np.argsort(-b if largest else b, kind="stable")[:k]
    return len(set(ia.tolist()) & set(ib.tolist())) / k


def compare(S_infl, S_peer, k=10):
    if S_infl.shape != S_peer.shape:
        raise ValueError(f"shapes differ: infl {S_infl.shape}, peer {S_peer.shape}")
    rows = []
    for i in range(S_infl.shape[0]):
        a, b = S_infl[i], S_peer[i].astype(np.float64)
        rows.append({
            "pearson": stats.pearsonr(a, b)[0],
            "spearman": stats.spearmanr(a, b)[0],
            "top": topk_overlap(a, b, k, True),
            "bottom": topk_overlap(a, b, k, False),
            "scale": float(a @ b / (a @ a)),
            "relerr": float(np.linalg.norm(b - a) / np.linalg.norm(a)),
        })
    return rows


def load_times(path):
    if not path:
        return None
    with open(path) as f:
        return json.load(f)


def fmt_times(t):
    """(fit, score, total wall, total CPU) as strings, '-' where unknown."""
    if t is None:
        return "-", "-", "-", "-"
    ph = t.get("phases", {})
    fit = f"{ph['fit']:.1f}" if "fit" in ph else "-"
    score = f"{ph['score']:.1f}" if "score" in ph else "-"
    total = t.get("total_s", sum(ph.values()))
    cpu = t.get("cpu_s")
    cpu = f"{sum(cpu.values()):.1f}" if cpu else "-"
    return fit, score, f"{total:.1f}", cpu


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--label", required=True, help="e.g. TracIn or EK-FAC")
    p.add_argument("--infl", required=True, help="infl scores HDF5 with /scores")
    p.add_argument("--peer", required=True, help="peer scores .npy [M, N] (or another infl scores .h5)")
    p.add_argument("--peer-name", default=None, help="default: the peer times' tool, else the file name")
    p.add_argument("--infl-times", help="infl times JSON")
    p.add_argument("--peer-times", help="peer times JSON")
    p.add_argument("-k", type=int, default=10, help="top-k overlap (default 10)")
    p.add_argument("--per-query", action="store_true", help="print every query's numbers")
    p.add_argument("--md", help="append a Markdown table row to this file")
    a = p.parse_args(argv)

    S_infl, attrs = load_infl(a.infl)
    S_peer = load_infl(a.peer)[0] if a.peer.endswith(".h5") else np.load(a.peer)
    ti, tp = load_times(a.infl_times), load_times(a.peer_times)
    peer = a.peer_name or (tp or {}).get("tool") or os.path.basename(a.peer)
    rows = compare(S_infl, S_peer, a.k)
    M, N = S_infl.shape
    print(f"{a.label}: infl {a.infl} ({attrs.get('method', '?')}) vs {peer} {a.peer}: {M} queries x {N} train rows")
    if a.per_query:
        print(f"{'query':>5} {'pearson':>9} {'spearman':>9} {'top' + str(a.k):>6} {'bot' + str(a.k):>6} {'scale':>9} {'relerr':>9}")
        for i, r in enumerate(rows):
            print(f"{i:5d} {r['pearson']:9.6f} {r['spearman']:9.6f} {r['top']:6.2f} {r['bottom']:6.2f} "
                  f"{r['scale']:9.5f} {r['relerr']:9.2e}")
    agg = {key: (np.mean([r[key] for r in rows]), np.min([r[key] for r in rows]), np.max([r[key] for r in rows]))
           for key in rows[0]}
    for key, (mean, lo, hi) in agg.items():
        print(f"  {key:9s} mean {mean:.6g}  min {lo:.6g}  max {hi:.6g}")
    fi, si, toti, ci = fmt_times(ti)
    fp, sp, totp, cp = fmt_times(tp)
    print(f"  times (s)   fit  score  total    cpu\n  infl     {fi:>6} {si:>6} {toti:>6} {ci:>6}\n"
          f"  {peer:8s} {fp:>6} {sp:>6} {totp:>6} {cp:>6}")
    if a.md:
        new = not os.path.exists(a.md) or os.path.getsize(a.md) == 0
        with open(a.md, "a") as f:
            if new:
                f.write("| method | M x N | infl fit s | infl score s | infl total s | peer | peer fit s | peer score s "
                        "| peer total s | speed-up (wall) | infl CPU s | peer CPU s | Pearson mean (min) | Spearman mean (min) "
                        f"| top-{a.k} overlap mean (min) | bottom-{a.k} overlap mean | scale peer/infl (mean) |\n")
                f.write("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
            speed = "-"
            if ti and tp and set(ti.get("phases", {})) == set(tp.get("phases", {})):  # like for like only
                speed = f"{float(totp) / float(toti):.1f}x"
            f.write(f"| {a.label} | {M} x {N} | {fi} | {si} | {toti} | {peer} | {fp} | {sp} | {totp} | {speed} | {ci} | {cp} "
                    f"| {agg['pearson'][0]:.6f} ({agg['pearson'][1]:.6f}) | {agg['spearman'][0]:.6f} ({agg['spearman'][1]:.6f}) "
                    f"| {agg['top'][0]:.3f} ({agg['top'][1]:.2f}) | {agg['bottom'][0]:.3f} | {agg['scale'][0]:.5f} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
