"""bench/torch_capture.py — what infl.torch.capture costs beside a plain forward+backward.

For each model, the same batches are run three ways, each timed as the median of --repeats
passes after a warm-up pass, the three ways taking turns:
  plain    forward, per-example losses, backward of their sum (loss.backward(): every
           parameter's gradient), nothing kept: the ceiling;
  hooks    capture's own pass without writing (forward hooks, tensor hooks, the backward to
           the captured weights, the rows copied to host float32 NumPy);
  capture  infl.torch.capture into a captured file (hooks + the HDF5 writes).
Models: the README's MLP shape 784-256-128-10 on 2,000 random rows (batches of 128), and a
small GPT-2-like model (infl.torch.GPT: 2 blocks, dim 128, 4 heads, context 64, vocabulary
257) on 128 random documents of 64 tokens (batches of 16), whose captured rows are its
tokens. Prints a Markdown table (ms per batch, ratio to plain, bytes written) and writes
JSON beside it with --json.

    OMP_NUM_THREADS=2 /work/torchenv/bin/python bench/torch_capture.py --json out.json
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
from infl import torch as it  # noqa: E402


def ce(out, batch):
    return it.token_ce(out, batch[1])


def plain_pass(model, batches):
    for b in batches:
        model.zero_grad(set_to_none=True)
        ce(model(b[0]), b).sum().backward()


def hooks_pass(model, batches):
    # capture's per-batch work without the file: the same internals capture() calls
    layers = it.linear_layers(model)
    rec = it._Recorder(layers)
    try:
        for b in batches:
            it._capture_batch(model, ce, it._default_forward, b, rec, layers, "auto", None, False, None, False)
    finally:
        rec.remove()


def capture_pass(model, batches, path):
    it.capture(model, ce, {"train": batches}, path, force=True)
    return os.path.getsize(path)


def timed(fns, repeats):
    """Median seconds of each function; one pass of each in turn per repetition, so that
    the load of the shared machine drifts over all of them alike."""
    for fn in fns:
        fn()  # warm-up
    t = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            t[i].append(time.perf_counter() - t0)
    return [statistics.median(x) for x in t]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="write the results as JSON here")
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="folder of the captured files (removed after)")
    args = ap.parse_args()
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    cases = []
    mlp = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)).eval()
    x, y = torch.rand(2000, 784, generator=g), torch.randint(0, 10, (2000,), generator=g)
    cases.append(("MLP 784-256-128-10, 2,000 rows, batch 128", mlp,
                  [(x[i:i + 128], y[i:i + 128]) for i in range(0, 2000, 128)]))
    gpt = it.GPT(n_layer=2, n_head=4, dim=128, context=64, vocab=257, eot=256).eval()
    docs = torch.randint(0, 256, (128, 65), generator=g)
    cases.append(("GPT 2 blocks, dim 128, context 64, 128 docs x 64 tokens, batch 16", gpt,
                  [(docs[i:i + 16, :-1], docs[i:i + 16, 1:]) for i in range(0, 128, 16)]))
    rows = []
    for name, model, batches in cases:
        path = os.path.join(args.dir, "torch_capture_bench_%d.h5" % os.getpid())
        nb = len(batches)
        tp, th, tc = timed([lambda: plain_pass(model, batches), lambda: hooks_pass(model, batches),
                            lambda: capture_pass(model, batches, path)], args.repeats)
        size = os.path.getsize(path)
        os.unlink(path)
        rows.append({"model": name, "batches": nb, "plain_ms": 1e3 * tp / nb, "hooks_ms": 1e3 * th / nb,
                     "capture_ms": 1e3 * tc / nb, "bytes": size})
    print("torch %s, %d threads, median of %d passes after a warm-up (a shared machine: noisy)\n" %
          (torch.__version__, torch.get_num_threads(), args.repeats))
    print("| model | plain fwd+bwd ms/batch | hooks ms/batch (x plain) | capture to file ms/batch (x plain) | bytes written |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print("| %s | %.2f | %.2f (%.2fx) | %.2f (%.2fx) | %s |" % (
            r["model"], r["plain_ms"], r["hooks_ms"], r["hooks_ms"] / r["plain_ms"], r["capture_ms"],
            r["capture_ms"] / r["plain_ms"], format(r["bytes"], ",")))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
