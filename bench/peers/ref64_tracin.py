"""A float64 TracIn reference, to tell which of two float32 score matrices is right.

Per-example gradients of every parameter in float64 (torch.func vmap of grad), then
sum_c lr_c g_q . g_z. Meant for a few thousand train rows: it holds one chunk of
per-example gradients (chunk x 235k doubles for the 784-256-128-10 MLP) at a time.

    python ref64_tracin.py --run run.h5 --train 'fmnist.h5:/train[0:2000]' \
        --query 'fmnist.h5:/test[0:100]' --infl infl_tracin.h5 --peer captum_tracin.npy

--infl and --peer may hold more train columns than --train selects (e.g. the full
60,000-row matrices): the first columns are compared, so --train must start where the
matrices' train range starts.
"""

import argparse
import os
import sys

import h5py
import numpy as np
import torch
from torch.func import functional_call, grad, vmap

import export


def tracin64(run, xq, yq, xt, yt, chunk=250):
    S = np.zeros((len(yq), len(yt)))
    for c in run.checkpoints:
        m = export.build_model(run, c).double()
        params = {k: v.detach() for k, v in m.named_parameters()}

        def loss(p, x, y):
            return torch.nn.functional.cross_entropy(functional_call(m, p, (x[None],)), y[None])

        g = vmap(grad(loss), in_dims=(None, 0, 0))

        def flat(x, y):
            d = g(params, torch.from_numpy(x).double(), torch.from_numpy(y))
            return torch.cat([v.reshape(len(y), -1) for v in d.values()], 1)

        Gq = flat(xq, yq)
        for s in range(0, len(yt), chunk):
            S[:, s:s + chunk] += c.lr * (Gq @ flat(xt[s:s + chunk], yt[s:s + chunk]).T).numpy()
    return S


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--query", required=True)
    p.add_argument("--infl", help="infl scores HDF5 with /scores")
    p.add_argument("--peer", help="peer scores .npy")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    run = export.load_run(a.run)
    xq, yq, _ = export.load_split(a.query)
    xt, yt, _ = export.load_split(a.train)
    S = tracin64(run, xq, yq, xt, yt)
    n = S.shape[1]
    mats = {}
    if a.infl:
        with h5py.File(a.infl, "r") as f:
            mats["infl"] = np.asarray(f["scores"][:, :n], dtype=np.float64)
    if a.peer:
        mats[os.path.basename(a.peer)] = np.load(a.peer, mmap_mode="r")[:, :n].astype(np.float64)
    # each query's query loss at the final checkpoint, to show where float32 loses digits
    model = export.build_model(run, run.checkpoint("final")).double()
    with torch.no_grad():
        ql = torch.nn.functional.cross_entropy(model(torch.from_numpy(xq).double()), torch.from_numpy(yq),
                                               reduction="none").numpy()
    print(f"float64 TracIn reference: {S.shape[0]} queries x {n} train rows; relative error ||S - S64|| / ||S64|| per query")
    print(f"{'query':>5} {'loss(final)':>12} " + " ".join(f"{k:>20}" for k in mats))
    errs = {k: [] for k in mats}
    for i in range(S.shape[0]):
        line = f"{i:5d} {ql[i]:12.3e} "
        for k, A in mats.items():
            e = np.linalg.norm(A[i] - S[i]) / np.linalg.norm(S[i])
            errs[k].append(e)
            line += f" {e:20.2e}"
        print(line)
    for k, e in errs.items():
        e = np.array(e)
        print(f"{k}: relative error median {np.median(e):.2e}, max {e.max():.2e}, queries above 1e-3: {(e > 1e-3).sum()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
