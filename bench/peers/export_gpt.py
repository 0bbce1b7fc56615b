"""Read an infl GPT run and a documents split into PyTorch.

The model is the GPT infl trains (host/models/gpt.c), written out as plain PyTorch:
token and position embeddings wte [V, C] and wpe [T, C]; per block a pre-LayerNorm
causal multi-head self-attention (qkv = LN1(x) W_attn^T + b_attn, the columns
[q | k | v], head h at columns h*hs of each, scores scaled by 1/sqrt(hs)) and an MLP
of width 4C with the exact (erf) GELU, each added to the residual stream; a final
LayerNorm and the output head tied to wte (logits = LN_f(x) wte^T, no bias).
LayerNorm eps is infl's INFL_GPT_LN_EPS = 1e-5. The four linears of a block are
nn.Linear modules named h.{i}.attn.c_attn, h.{i}.attn.c_proj, h.{i}.mlp.c_fc,
h.{i}.mlp.c_proj: infl's attributed layers h{i}.attn.c_attn, ... (the tied head is
F.linear on wte, not a module, so no hook sees it). infl stores every tensor by its
GPT-2 name in /checkpoints/NNNNNN (wte, wpe, h{i}.ln_1.weight, h{i}.attn.c_attn.weight
[3C, C], ..., ln_f.bias): nn.Linear's [d_out, d_in] layout, copied as is.

A document of L tokens t_0 .. t_{L-1} is one example of n = min(L + 1, context)
positions: inputs [EOT, t_0, ..., t_{n-2}], targets [t_0, ..., t_{n-1}] with t_L = EOT.
A batch pads documents to its longest n with EOT inputs and masked targets (-100, F.cross_entropy's
ignore_index); attention is causal, so padding never reaches a real position, and a
document's loss is the sum over its positions of the next-token cross-entropy.

As a script it checks the import: it prints the loss per token (summed over every
document's positions, divided by the positions) and the perplexity of a checkpoint
on a split, which must match `infl eval` to ~1e-5 relative:

    python export_gpt.py --run gpt.h5 --data 'fortunes.h5:/test' [--checkpoint final]
"""

import argparse
import math
import sys
import time
from dataclasses import dataclass, field

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from export import parse_ref

LN_EPS = 1e-5     # INFL_GPT_LN_EPS
IGNORE = -100     # target of a padding position (F.cross_entropy's default ignore_index)


def _s(v):
    return v.decode() if isinstance(v, bytes) else str(v)


# ---- files ----

@dataclass
class GptRun:
    path: str
    n_layer: int
    n_head: int
    dim: int
    context: int
    vocab: int
    eot: int
    weight_decay: float   # AdamW's decoupled decay: not a term of the loss (infl_spec_objective_wd is 0)
    data: str
    checkpoints: list     # [(name, step, lr)] sorted by step
    final: str

    def checkpoint_name(self, which="final"):
        if which in (None, "final"):
            return self.final
        for name, step, _ in self.checkpoints:
            if name == which or str(step) == str(which):
                return name
        raise KeyError(f"{self.path}: no checkpoint {which!r} (have {[c[0] for c in self.checkpoints]})")


def load_gpt_run(path):
    with h5py.File(path, "r") as f:
        if _s(f.attrs.get("infl_format", "")) != "run":
            raise ValueError(f"{path}: infl_format is {f.attrs.get('infl_format')!r}, expected 'run'")
        m = f["model"].attrs
        if _s(m.get("kind", "mlp")) != "gpt":
            raise ValueError(f"{path}: /model kind is {_s(m.get('kind', 'mlp'))!r}, expected 'gpt' (export.py reads MLPs)")
        cks = sorted(((name, int(f["checkpoints"][name].attrs["step"]), float(f["checkpoints"][name].attrs["lr"]))
                      for name in f["checkpoints"]), key=lambda c: c[1])
        final = _s(f["checkpoints"].attrs.get("final", cks[-1][0]))
        return GptRun(path, int(m["n_layer"]), int(m["n_head"]), int(m["dim"]), int(m["context"]), int(m["vocab"]),
                      int(m["eot"]), float(m["weight_decay"]), _s(m.get("data", "")), cks, final)


def read_tensors(path, checkpoint):
    """{name: float32 numpy array} of one checkpoint group."""
    with h5py.File(path, "r") as f:
        g = f["checkpoints"][checkpoint]
        return {k: np.asarray(g[k], dtype=np.float32) for k in g}


def load_docs(ref):
    """The documents of a data reference 'FILE:/split[a:b]' as a list of int64 numpy arrays, and the index a.

    A documents split holds tokens int32 [T] and offsets int64 [N+1] (document i is
    tokens[offsets[i]:offsets[i+1]]); a row range selects documents."""
    path, split, a, b = parse_ref(ref)
    with h5py.File(path, "r") as f:
        if _s(f.attrs.get("infl_format", "")) != "dataset":
            raise ValueError(f"{path}: infl_format is {f.attrs.get('infl_format')!r}, expected 'dataset'")
        g = f[split]
        if "tokens" not in g:
            raise ValueError(f"{ref}: not a documents split (no tokens); import it with infl import text")
        off = np.asarray(g["offsets"][:], dtype=np.int64)
        n = len(off) - 1
        b = n if b is None else b
        if not 0 <= a < b <= n:
            raise ValueError(f"{ref}: documents [{a}:{b}] outside [0:{n}]")
        tok = np.asarray(g["tokens"][off[a]:off[b]], dtype=np.int64)
    base = off[a]
    return [tok[off[i] - base:off[i + 1] - base] for i in range(a, b)], a


# ---- examples ----

def make_example(doc, context, eot, prompt_len=0):
    """(inputs, targets) int64 [n] of one document: [EOT, t_0, ...] and [t_0, ..., EOT], n = min(L + 1, context).

    With prompt_len P > 0 the targets of the prompt (positions j < P, whose targets are
    t_0 .. t_{P-1}) are masked: the loss is the completion's alone."""
    n = min(len(doc) + 1, context)
    tgt = np.append(doc[:n], eot)[:n].astype(np.int64)  # t_0 .. t_{n-1}, t_L = EOT
    inp = np.concatenate([[eot], tgt[:n - 1]]).astype(np.int64)
    if prompt_len > 0:
        tgt[:min(prompt_len, n)] = IGNORE
    return torch.from_numpy(inp), torch.from_numpy(tgt)


class DocDataset(torch.utils.data.Dataset):
    """Documents as (inputs, targets) pairs of n_i positions each (make_example)."""

    def __init__(self, docs, context, eot, prompt_len=0):
        self.ex = [make_example(d, context, eot, prompt_len) for d in docs]
        self.eot = eot

    def __len__(self):
        return len(self.ex)

    def __getitem__(self, i):
        return self.ex[i]


def collate(eot):
    """A DataLoader collate_fn: pads a list of (inputs, targets) to the longest n with EOT
    inputs and IGNORE targets; returns {"input_ids" [B, Tb], "labels" [B, Tb], "mask" [B, Tb]}
    where mask is 1 at the real positions (also the prompt's, which carry no loss)."""

    def fn(items):
        Tb = max(len(x) for x, _ in items)
        B = len(items)
        inp = torch.full((B, Tb), eot, dtype=torch.int64)
        tgt = torch.full((B, Tb), IGNORE, dtype=torch.int64)
        mask = torch.zeros((B, Tb), dtype=torch.int64)  # int: kronfluence counts tokens by its sum
        for i, (x, y) in enumerate(items):
            inp[i, :len(x)] = x
            tgt[i, :len(y)] = y
            mask[i, :len(x)] = 1
        return {"input_ids": inp, "labels": tgt, "mask": mask}

    return fn


# ---- the model ----

class CausalSelfAttention(nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.C, self.H = C, H
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)

    def forward(self, a):
        # a is (B, T, C); qkv (B, T, 3C) = [q | k | v], head h at columns h*hs of each
        B, T, C = a.shape
        hs = C // self.H
        q, k, v = self.c_attn(a).split(C, dim=2)
        q, k, v = (t.view(B, T, self.H, hs).transpose(1, 2) for t in (q, k, v))  # (B, H, T, hs)
        s = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))                   # (B, H, T, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=a.device).tril()
        p = torch.softmax(s.masked_fill(~causal, float("-inf")), dim=-1)
        y = (p @ v).transpose(1, 2).reshape(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.c_fc = nn.Linear(C, 4 * C)
        self.c_proj = nn.Linear(4 * C, C)

    def forward(self, u):
        return self.c_proj(F.gelu(self.c_fc(u), approximate="none"))  # infl's GELU is z Phi(z) (erf)


class Block(nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.ln_1 = nn.LayerNorm(C, eps=LN_EPS)
        self.attn = CausalSelfAttention(C, H)
        self.ln_2 = nn.LayerNorm(C, eps=LN_EPS)
        self.mlp = MLP(C)

    def forward(self, x):
        m = x + self.attn(self.ln_1(x))
        return m + self.mlp(self.ln_2(m))


class GPT(nn.Module):
    def __init__(self, run):
        super().__init__()
        C = run.dim
        self.wte = nn.Embedding(run.vocab, C)
        self.wpe = nn.Embedding(run.context, C)
        self.h = nn.ModuleList([Block(C, run.n_head) for _ in range(run.n_layer)])
        self.ln_f = nn.LayerNorm(C, eps=LN_EPS)

    def forward(self, input_ids):
        # input_ids (B, T) -> logits (B, T, V)
        T = input_ids.shape[1]
        x = self.wte(input_ids) + self.wpe(torch.arange(T, device=input_ids.device))
        for blk in self.h:
            x = blk(x)
        return F.linear(self.ln_f(x), self.wte.weight)  # the head tied to wte

    def load_infl(self, tensors):
        """Copies infl's tensors (GPT-2 names: h{i}.attn.c_attn.weight, ...) into the modules."""
        sd = {}
        for name, arr in tensors.items():
            key = name
            if name.startswith("h") and "." in name and name[1:name.index(".")].isdigit():
                key = "h." + name[1:]  # h0.ln_1.weight -> h.0.ln_1.weight
            elif name in ("wte", "wpe"):
                key = name + ".weight"
            sd[key] = torch.from_numpy(arr)
        missing = set(self.state_dict()) - set(sd)
        extra = set(sd) - set(self.state_dict())
        if missing or extra:
            raise ValueError(f"checkpoint tensors do not match the model: missing {sorted(missing)}, extra {sorted(extra)}")
        for k, v in self.state_dict().items():
            if tuple(v.shape) != tuple(sd[k].shape):
                raise ValueError(f"{k}: checkpoint {tuple(sd[k].shape)}, model {tuple(v.shape)}")
        self.load_state_dict(sd)
        return self


def attributed_modules(run):
    """infl's attributed layers (the four linears of every block, not the tied head) as module names."""
    return [f"h.{i}.{n}" for i in range(run.n_layer) for n in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]


def build_gpt(run, checkpoint="final"):
    name = run.checkpoint_name(checkpoint)
    return GPT(run).load_infl(read_tensors(run.path, name)), name


def doc_losses(model, batch):
    """Per-document summed next-token cross-entropy (B,) and positions with a loss."""
    logits = model(batch["input_ids"])
    tgt = batch["labels"]
    per = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=IGNORE,
                          reduction="none").view(tgt.shape)
    return per.sum(1), (tgt != IGNORE).sum(1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--data", required=True, help="FILE:/split[a:b] (a documents split)")
    p.add_argument("--checkpoint", default="final")
    p.add_argument("--batch", type=int, default=64, help="documents per forward pass")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    run = load_gpt_run(a.run)
    print(f"{run.path}: gpt {run.n_layer} layers, {run.n_head} heads, dim {run.dim}, context {run.context}, "
          f"vocab {run.vocab} (EOT {run.eot}), AdamW wd {run.weight_decay}")
    model, ck = build_gpt(run, a.checkpoint)
    model.eval()
    docs, _ = load_docs(a.data)
    ds = DocDataset(docs, run.context, run.eot)
    # longest first keeps the padding small
    order = sorted(range(len(ds)), key=lambda i: -len(ds[i][0]))
    fn = collate(run.eot)
    t0 = time.perf_counter()
    total, ntok = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(order), a.batch):
            batch = fn([ds[i] for i in order[s:s + a.batch]])
            loss, n = doc_losses(model, batch)
            total += loss.double().sum().item()
            ntok += int(n.sum())
    trunc = sum(len(d) + 1 > run.context for d in docs)
    per = total / ntok
    print(f"{a.data} at {ck}: loss {per:.9g} per token, perplexity {math.exp(per):.4f} "
          f"({len(docs)} documents, {ntok} positions, {trunc} truncated to the context; {time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
