"""Captum's TracInCP on an infl run: the same score as `infl rank --method tracin`.

infl's TracIn is  score(q, z) = sum_c lr_c * grad l(w_c, q) . grad l(w_c, z)  over all
layers' weights and biases, with per-example losses and no 1/N. Captum computes the same
when
  * layers=None: the gradients of every parameter (each nn.Linear's weight and bias);
  * checkpoints_load_func loads checkpoint c into the model and returns lr_c, which
    TracInCP multiplies into that checkpoint's dot products;
  * loss_fn = CrossEntropyLoss(reduction="sum") with sample_wise_grads_per_batch=True:
    Captum's hook-based per-sample gradients of a *sum* reduction are the per-example
    gradients (with "mean" it would rescale by the batch size; reduction="none" would
    need sample_wise_grads_per_batch=False, which loops over examples one by one).

Checkpoints are held in memory (a dict of state tensors); "loading" one is a copy into
the model. Writes the full score matrix [M, N] (float32 .npy) and a JSON of times.

    python captum_tracin.py --run run.h5 --train 'fmnist.h5:/train' \
        --query 'fmnist.h5:/test[0:100]' -o captum_tracin.npy --times captum_tracin.json
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import captum
from captum.influence import TracInCP

import export


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--train", default=None, help="FILE:/split[a:b] (default: the run's data)")
    p.add_argument("--query", required=True, help="FILE:/split[a:b]")
    p.add_argument("--checkpoints", default="all", help="all, or names/steps comma-separated")
    p.add_argument("--batch", type=int, default=256, help="train rows per Captum batch (default 256)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("-o", "--output", required=True, help="scores .npy [M, N]")
    p.add_argument("--times", help="write the times as JSON")
    a = p.parse_args(argv)

    torch.set_num_threads(a.threads)
    t_setup = time.perf_counter()
    run = export.load_run(a.run)
    train_ref = a.train or run.data
    xt, yt, _ = export.load_split(train_ref)
    xq, yq, _ = export.load_split(a.query)
    cks = run.checkpoints if a.checkpoints == "all" else [run.checkpoint(c) for c in a.checkpoints.split(",")]
    model = export.build_model(run, cks[0])
    model.eval()  # no dropout/batchnorm anyway
    states = {c.name: (export.state_dict_of(model, c), c.lr) for c in cks}

    def load_checkpoint(m, name):
        sd, lr = states[name]
        m.load_state_dict(sd)
        return lr

    train_loader = DataLoader(TensorDataset(torch.from_numpy(xt), torch.from_numpy(yt)), batch_size=a.batch,
                              shuffle=False)
    tracin = TracInCP(model, train_loader, checkpoints=[c.name for c in cks], checkpoints_load_func=load_checkpoint,
                      layers=None, loss_fn=nn.CrossEntropyLoss(reduction="sum"), batch_size=a.batch,
                      sample_wise_grads_per_batch=True)
    assert tracin.checkpoints == [c.name for c in cks], tracin.checkpoints  # step order kept
    setup_s = time.perf_counter() - t_setup

    q = (torch.from_numpy(xq), torch.from_numpy(yq))
    t0, c0 = time.perf_counter(), time.process_time()
    scores = tracin.influence(q, k=None)
    score_s, score_cpu = time.perf_counter() - t0, time.process_time() - c0
    scores = scores.detach().cpu().numpy().astype(np.float32)
    assert scores.shape == (len(yq), len(yt)), scores.shape
    np.save(a.output, scores)

    times = {
        "tool": "captum", "method": "tracin", "version": captum.__version__, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "M": int(len(yq)), "N": int(len(yt)), "checkpoints": len(cks),
        "batch": a.batch, "setup_s": setup_s, "phases": {"score": score_s}, "total_s": score_s,
        "cpu_s": {"score": score_cpu}, "load_avg": os.getloadavg(),
        "what": "score = TracInCP.influence(queries, k=None): query and train per-sample gradients for every "
                "checkpoint (hook-based, all Linear weights+biases), their dot products and lr weighting; "
                "excludes imports, reading HDF5 into tensors and building the model/TracInCP object (setup_s)",
        "python": platform.python_version(),
    }
    if a.times:
        with open(a.times, "w") as f:
            json.dump(times, f, indent=1)
    print(f"captum TracInCP: {len(yq)} queries x {len(yt)} train, {len(cks)} checkpoints: "
          f"setup {setup_s:.2f} s, scoring {score_s:.2f} s -> {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
