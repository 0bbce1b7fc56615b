"""Read infl's run and dataset HDF5 files into PyTorch.

The model is the same MLP infl trains: nn.Sequential of nn.Linear layers with the
run's activation between them (none after the last). infl stores W_l as float32
[d_out, d_in] row-major, which is exactly nn.Linear.weight, and b_l [d_out].
softmax_ce is nn.CrossEntropyLoss per example (reduction chosen by the caller).

As a script it checks the import: it prints the run's checkpoints and the mean loss
and accuracy of one checkpoint on a split, which must match `infl eval`:

    python export.py --run run.h5 --data 'fmnist.h5:/test' [--checkpoint final]
"""

import argparse
import re
import sys
from dataclasses import dataclass, field

import h5py
import numpy as np
import torch
from torch import nn

_REF = re.compile(r"^(?P<file>.+?):(?P<split>/[^\[\]]+)(\[(?P<a>-?\d*)(?P<colon>:?)(?P<b>-?\d*)\])?$")


def parse_ref(ref):
    """'FILE:/split[a:b]' -> (file, split, a, b) with b = None for 'to the end'.

    The same forms infl accepts: [a:b], [a:], [:b], [i] (one row)."""
    m = _REF.match(ref)
    if not m:
        raise ValueError(f"{ref}: expected FILE:/split with an optional row range [a:b]")
    a, b = m.group("a"), m.group("b")
    if m.group("a") is None:  # no brackets
        return m.group("file"), m.group("split"), 0, None
    if not m.group("colon"):  # [i]
        i = int(a)
        return m.group("file"), m.group("split"), i, i + 1
    return m.group("file"), m.group("split"), int(a) if a else 0, int(b) if b else None


def load_split(ref):
    """x float32 [n, D] and y int64 [n] (numpy) for a data reference, and the row offset."""
    path, split, a, b = parse_ref(ref)
    with h5py.File(path, "r") as f:
        if f.attrs.get("infl_format") not in (b"dataset", "dataset"):
            raise ValueError(f"{path}: infl_format is {f.attrs.get('infl_format')!r}, expected 'dataset'")
        g = f[split]
        n = g["x"].shape[0]
        b = n if b is None else b
        if not 0 <= a < b <= n:
            raise ValueError(f"{ref}: rows [{a}:{b}] outside [0:{n}]")
        x = np.asarray(g["x"][a:b], dtype=np.float32)
        y = np.asarray(g["y"][a:b])
    if y.ndim != 1:
        raise ValueError(f"{ref}: y is {y.shape}; only class labels (int32 [N]) are supported here")
    return x, y.astype(np.int64), a


def _s(v):
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass
class Checkpoint:
    name: str
    step: int
    epoch: float
    lr: float
    weights: list = field(default_factory=list)  # [(W [d_out, d_in], b [d_out]) per layer], float32 numpy


@dataclass
class Run:
    path: str
    layers: list
    activation: str
    loss: str
    weight_decay: float
    data: str
    checkpoints: list
    final: str

    def checkpoint(self, which="final"):
        """A checkpoint by name, step or 'final'."""
        if which in (None, "final"):
            which = self.final
        for c in self.checkpoints:
            if c.name == which or str(c.step) == str(which):
                return c
        raise KeyError(f"{self.path}: no checkpoint {which!r} (have {[c.name for c in self.checkpoints]})")


def load_run(path):
    with h5py.File(path, "r") as f:
        if _s(f.attrs.get("infl_format", "")) != "run":
            raise ValueError(f"{path}: infl_format is {f.attrs.get('infl_format')!r}, expected 'run'")
        m = f["model"].attrs
        layers = [int(v) for v in m["layers"]]
        L = len(layers) - 1
        cks = []
        for name in f["checkpoints"]:
            g = f["checkpoints"][name]
            ws = []
            for l in range(L):
                W = np.asarray(g[f"W{l}"], dtype=np.float32)
                b = np.asarray(g[f"b{l}"], dtype=np.float32)
                assert W.shape == (layers[l + 1], layers[l]), (name, l, W.shape)
                ws.append((W, b))
            cks.append(Checkpoint(name, int(g.attrs["step"]), float(g.attrs["epoch"]), float(g.attrs["lr"]), ws))
        cks.sort(key=lambda c: c.step)  # infl's TracIn order
        final = _s(f["checkpoints"].attrs.get("final", cks[-1].name))
        return Run(path, layers, _s(m["activation"]), _s(m["loss"]), float(m["weight_decay"]),
                   _s(m.get("data", "")), cks, final)


_ACT = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": lambda: nn.GELU(approximate="none")}  # infl's gelu uses erf


def build_model(run, checkpoint=None):
    """nn.Sequential(Linear, act, Linear, act, ..., Linear) with a checkpoint's weights."""
    if run.loss != "softmax_ce":
        raise NotImplementedError(f"{run.path}: loss {run.loss}; these peer scripts handle softmax_ce only")
    mods = []
    L = len(run.layers) - 1
    for l in range(L):
        mods.append(nn.Linear(run.layers[l], run.layers[l + 1]))
        if l < L - 1:
            mods.append(_ACT[run.activation]())
    model = nn.Sequential(*mods)
    if checkpoint is not None:
        load_weights(model, checkpoint if isinstance(checkpoint, Checkpoint) else run.checkpoint(checkpoint))
    return model


def linear_layers(model):
    return [m for m in model if isinstance(m, nn.Linear)]


def state_dict_of(model, ck):
    """The checkpoint as a state dict of `model` (float32 tensors)."""
    sd = {}
    for i, m in enumerate(model):
        if isinstance(m, nn.Linear):
            l = len([k for k in sd if k.endswith(".weight")])
            W, b = ck.weights[l]
            sd[f"{i}.weight"] = torch.from_numpy(W.copy())
            sd[f"{i}.bias"] = torch.from_numpy(b.copy())
    return sd


def load_weights(model, ck):
    with torch.no_grad():
        for lin, (W, b) in zip(linear_layers(model), ck.weights):
            lin.weight.copy_(torch.from_numpy(W))
            lin.bias.copy_(torch.from_numpy(b))
    return model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--data", required=True, help="FILE:/split[a:b]")
    p.add_argument("--checkpoint", default="final")
    a = p.parse_args(argv)
    run = load_run(a.run)
    print(f"{run.path}: layers {run.layers}, {run.activation}, {run.loss}, wd {run.weight_decay}")
    for c in run.checkpoints:
        print(f"  {c.name} step {c.step:6d} epoch {c.epoch:7.3f} lr {c.lr:.6g}" + ("  (final)" if c.name == run.final else ""))
    model = build_model(run, a.checkpoint).eval()
    x, y, _ = load_split(a.data)
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
        loss = nn.functional.cross_entropy(logits, torch.from_numpy(y)).item()
        acc = (logits.argmax(1).numpy() == y).mean()
    print(f"{a.data} at {run.checkpoint(a.checkpoint).name}: loss {loss:.4f}  accuracy {100 * acc:.2f}% ({len(y)} examples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
