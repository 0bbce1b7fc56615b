"""infl.torch — PyTorch models in and out of infl.

- capture(): hooks on a model's nn.Linear modules (and Hugging Face's Conv1D) record every
  example's layer inputs A and output gradients D of its own loss, per token, for every
  checkpoint, into a `captured` file (infl.captured.CapturedWriter) that `infl fit`,
  `infl rank` and `infl self` read as a model: attribution of any PyTorch model with no
  training code in infl.
- export_run(): an infl run (an MLP's, or a GPT's) as a torch module with the same outputs.
- import_mlp(): a torch nn.Sequential of Linear and ReLU/Tanh/GELU layers as an infl run.

Imported only where torch is installed (infl/__init__ does not import it); needs numpy and
h5py too. Tested with torch 2.x on the CPU; capture runs wherever the model runs.
"""

import math
import os
from collections.abc import Mapping

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import captured as _cap

__all__ = ["capture", "export_run", "import_mlp", "GPT", "lm_batch", "token_ce", "linear_layers"]


# ---- which modules are captured ----


def _is_conv1d(m):
    # Hugging Face's Conv1D (GPT-2): y = x W + b with W [d_in, d_out]. Matched by class name
    # so that transformers need not be importable here.
    return type(m).__name__ == "Conv1D" and hasattr(m, "nf") and getattr(m, "weight", None) is not None \
        and m.weight.dim() == 2 and m.weight.shape[1] == m.nf


def _is_linear(m):
    return isinstance(m, nn.Linear) or _is_conv1d(m)


def _dims(m):
    if isinstance(m, nn.Linear):
        return m.in_features, m.out_features
    return m.weight.shape[0], m.weight.shape[1]  # Conv1D: [d_in, d_out]


def _wb(m):
    """(W [d_out, d_in], b [d_out] or None) of a captured module, float32 NumPy."""
    W = m.weight.detach()
    if not isinstance(m, nn.Linear):
        W = W.t()
    b = None if m.bias is None else m.bias.detach().float().cpu().numpy()
    return W.float().cpu().numpy(), b


def linear_layers(model, modules=None):
    """[(name, module)] of the layers capture() records, in registration order: every
    nn.Linear and Conv1D (modules=None), those named in a list, or those for which
    modules(name, module) is true."""
    found = [(n, m) for n, m in model.named_modules() if _is_linear(m)]
    if modules is None:
        return found
    if callable(modules):
        return [(n, m) for n, m in found if modules(n, m)]
    by = dict(model.named_modules())
    out = []
    for n in modules:
        if n not in by:
            raise ValueError("modules: the model has no module %r" % n)
        if not _is_linear(by[n]):
            raise ValueError("modules: %r is a %s, not an nn.Linear or Conv1D" % (n, type(by[n]).__name__))
        out.append((n, by[n]))
    return out


# ---- per-example losses ----


def token_ce(logits, targets, ignore_index=-100):
    """Each example's own cross-entropy [B]: logits [B, K] and targets [B], or logits
    [B, T, V] and targets [B, T] summed over the positions whose target is not ignore_index
    (a sequence's loss is the sum over its tokens, as the captured format wants)."""
    if logits.dim() == 2:
        return F.cross_entropy(logits.float(), targets, reduction="none")
    B, T, V = logits.shape
    l = F.cross_entropy(logits.float().reshape(B * T, V), targets.reshape(B * T), reduction="none",
                        ignore_index=ignore_index)
    return l.reshape(B, T).sum(1)


def _logits(out):
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


def _default_forward(model, batch):
    if isinstance(batch, Mapping):
        return model(**{k: v for k, v in batch.items() if k != "labels"})
    if isinstance(batch, (tuple, list)):
        return model(batch[0])
    return model(batch)


def _sampled_ce(out, keep, gen):
    """Σ over kept positions of the cross-entropy at targets drawn from softmax(logits)."""
    z = _logits(out).detach()
    p = torch.softmax(z.float(), dim=-1)
    flat = p.reshape(-1, p.shape[-1])
    ys = torch.multinomial(flat.cpu(), 1, generator=gen).reshape(p.shape[:-1]).to(z.device)
    if z.dim() == 2:
        return F.cross_entropy(_logits(out).float(), ys, reduction="none")
    l = F.cross_entropy(_logits(out).float().reshape(-1, z.shape[-1]), ys.reshape(-1), reduction="none")
    l = l.reshape(z.shape[:-1])
    if keep is not None:
        l = l * keep.to(l.dtype)
    return l.reshape(l.shape[0], -1).sum(1)


# ---- capture ----


class _Recorder:
    """Forward hooks keep each layer's input; tensor hooks on its output keep the gradient
    that reaches it (hooks registered before an in-place op on the output still see the
    gradient of the original value in torch 2.x)."""

    def __init__(self, layers):
        self.layers = layers
        self.names = [n for n, _ in layers]
        self.phase = None
        self.A, self.D, self.Ds = {}, {}, {}
        self.handles = []
        for n, m in layers:
            self.handles.append(m.register_forward_hook(self._hook(n)))

    def _hook(self, name):
        def fwd(module, inputs, output):
            if self.phase is None:
                return
            if name in self.A:
                raise RuntimeError("module %r was called twice in one forward; a captured layer is one use per "
                                   "row (leave it out with modules=)" % name)
            self.A[name] = inputs[0].detach()
            if output.requires_grad:
                output.register_hook(lambda g: self._grad(name, g))
        return fwd

    def _grad(self, name, g):
        dst = self.D if self.phase == "data" else self.Ds
        if name in dst:
            dst[name] = dst[name] + g.detach()
        else:
            dst[name] = g.detach()

    def clear(self):
        self.A, self.D, self.Ds = {}, {}, {}

    def remove(self):
        for h in self.handles:
            h.remove()


def _rows(t, B, name):
    """A layer's activation or gradient [B, ..., d] as [B, rows per example, d]."""
    if t.dim() < 2 or t.shape[0] != B:
        raise ValueError("layer %r: an activation of shape %s for a batch of %d examples; capture needs the batch "
                         "first ([B, d] or [B, T, d])" % (name, list(t.shape), B))
    return t.reshape(B, -1, t.shape[-1])


def _keep_mask(mask, batch, B, T, device):
    if mask is None:
        return None
    k = mask(batch)
    k = torch.as_tensor(k, device=device)
    if k.dim() == 1:  # lengths: the first L_i positions are real
        k = torch.arange(T, device=device)[None, :] < k[:, None]
    if tuple(k.shape) != (B, T):
        raise ValueError("mask(batch) gave %s; expected [B, T] = [%d, %d] (or lengths [B])" % (list(k.shape), B, T))
    return k.bool()


def _as_iter(batches):
    return batches() if callable(batches) else batches


def _state_of(state):
    if state is None or isinstance(state, Mapping):
        return state
    if isinstance(state, nn.Module):
        return state.state_dict()
    if isinstance(state, (str, os.PathLike)):
        return torch.load(state, map_location="cpu")
    raise TypeError("a checkpoint's state must be a state_dict, a module, a file or None, not %s" % type(state).__name__)


def capture(model, loss_fn, splits, path, *, checkpoints=None, modules=None, tokens="auto", forward=None,
            mask=None, labels=None, sample_fisher=False, seed=0, outputs=None, source=None, loss=None,
            weight_decay=0.0, force=False):
    """Captures a model's per-example layer inputs and output gradients into `path`.

    model: an nn.Module, put in eval mode for the capture (dropout off, BatchNorm on its
        running statistics: in train mode BatchNorm mixes the examples of a batch, and then
        the backward of the summed loss is no longer each example's own gradient); its mode,
        weights and requires_grad flags are restored afterwards.
    loss_fn(out, batch) -> per-example losses [B] at the data's targets, out = forward(model,
        batch). Each example's own loss: reduction="none", and a sequence's loss summed over
        its tokens (token_ce does both). capture backpropagates their sum, which gives every
        example the gradient of its own loss as long as examples do not interact.
    splits: {"train": batches, "test": batches, ...}: each an iterable of batches read again at
        every checkpoint in the same order (a list; a DataLoader without shuffling), or a
        callable returning one.
    checkpoints: [(state, lr, step)] or [(state, lr, step, epoch)], state a state_dict, a
        module, a torch.save file or None (the model as it is); lr TracIn's weight of the
        interval that ends there. Default: the model as it is, lr 1, step 0.
    modules: None (every nn.Linear and Conv1D), names, or a predicate (name, module) -> bool.
        With modules=None, layers the forward never calls (nn.MultiheadAttention's out_proj,
        whose weight is used without calling it) are left out; named ones must be called.
    tokens: "auto" (1 when the layers see [B, T, d], 0 for [B, d]), 0 or 1.
    forward(model, batch) -> out: default model(batch[0]) for a tuple or list, model(**batch)
        without "labels" for a dict, else model(batch).
    mask(batch) -> bool [B, T] of the real tokens, or lengths [B]: only their rows are
        stored (each example's rows become its offsets). Padding rows must carry no gradient.
    labels(batch) -> int [B]: stored as the split's y (tables, label-flip recall).
    sample_fisher: True: also D at targets drawn from softmax(logits) (the last dimension of
        the output, at the mask's positions), written as Ds so that `infl fit` uses the true
        Fisher; or a callable (out, batch, generator) -> [B] giving the sampled losses.
    outputs: the output width recorded (default: the last captured layer's d_out).
    weight_decay: the training objective's L2 weight ((wd/2)|w|^2 over the weights), recorded
        for EK-FAC's curvature; 0 = none.
    Returns path. Memory: one batch's activations and gradients at a time.
    """
    layers = linear_layers(model, modules)
    if not layers:
        raise ValueError("the model has no nn.Linear or Conv1D module to capture")
    for n, _ in layers:
        if len(n.encode()) > _cap.MAX_NAME_BYTES:
            raise ValueError("module name %r is longer than %d bytes (the format's limit)" % (n, _cap.MAX_NAME_BYTES))
    if tokens not in ("auto", 0, 1):
        raise ValueError("tokens is %r; expected 'auto', 0 or 1" % (tokens,))
    forward = forward or _default_forward
    if not checkpoints:
        checkpoints = [(None, 1.0, 0)]
    was_training = model.training
    saved = None
    if any(c[0] is not None for c in checkpoints):
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    grad_flags = {id(m.weight): m.weight.requires_grad for _, m in layers}
    inplace = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    rec = _Recorder(layers)
    writer = None
    gen = torch.Generator().manual_seed(int(seed))
    try:
        model.eval()
        for _, m in layers:
            m.weight.requires_grad_(True)
        for m in inplace:
            m.inplace = False
        for ci, ck in enumerate(checkpoints):
            state, lr, step = ck[0], ck[1], ck[2]
            epoch = ck[3] if len(ck) > 3 else 0.0
            st = _state_of(state)
            if st is not None:
                model.load_state_dict(st)
            if writer is not None:
                writer.begin_checkpoint(step, lr, epoch, [_wb(m) for _, m in layers])
            for split, batches in splits.items():
                ys = []
                for batch in _as_iter(batches):
                    res = _capture_batch(model, loss_fn, forward, batch, rec, layers, tokens, mask, sample_fisher,
                                         gen, strict=modules is not None)
                    if writer is None:
                        # the first batch fixes the layers (those called) and the token layout
                        layers, tokens = res["layers"], res["tokens"]
                        rec.remove()
                        rec = _Recorder(layers)
                        writer = _cap.CapturedWriter(
                            path, [(n, *_dims(m), 1 if m.bias is not None else 0) for n, m in layers],
                            outputs=outputs if outputs is not None else _dims(layers[-1][1])[1], tokens=tokens,
                            source=source or _describe(model), force=force, weight_decay=weight_decay,
                            loss=loss or getattr(loss_fn, "__name__", "per-example loss") + " of each example (summed over its tokens)")
                        for s in splits:
                            writer.add_split(s)
                        writer.begin_checkpoint(step, lr, epoch, [_wb(m) for _, m in layers])
                    writer.append(split, res["A"], res["D"], res["loss"], res["Ds"], counts=res["counts"])
                    if ci == 0 and labels is not None:
                        ys.append(np.asarray(torch.as_tensor(labels(batch)).cpu().numpy()).astype(np.int64).reshape(-1))
                if ci == 0 and labels is not None:
                    writer.set_labels(split, np.concatenate(ys) if ys else np.zeros(0, np.int64))
        if writer is None:
            raise ValueError("no batch was given in any split")
        writer.close()
        writer = None
    finally:
        rec.remove()
        if writer is not None:
            writer.abort()
        for m in inplace:
            m.inplace = True
        for _, m in linear_layers(model, None):
            if id(m.weight) in grad_flags:
                m.weight.requires_grad_(grad_flags[id(m.weight)])
        if saved is not None:
            model.load_state_dict(saved)
        model.train(was_training)
    return path


def _describe(model):
    s = "torch %s: %s" % (torch.__version__, model.__class__.__name__)
    r = repr(model).replace("\n", " ")
    r = " ".join(r.split())
    return s + (": " + r if len(r) <= 400 else "")


def _capture_batch(model, loss_fn, forward, batch, rec, layers, tokens, mask, sample_fisher, gen, strict):
    rec.clear()
    rec.phase = "data"
    with torch.enable_grad():
        out = forward(model, batch)
        losses = loss_fn(out, batch)
        if not torch.is_tensor(losses) or losses.dim() != 1:
            raise ValueError("loss_fn must return per-example losses [B] (reduction='none'), got %s" %
                             (list(losses.shape) if torch.is_tensor(losses) else type(losses).__name__))
        B = losses.shape[0]
        called = [(n, m) for n, m in layers if n in rec.A]
        missing = [n for n, _ in layers if n not in rec.A]
        if missing and strict:
            raise ValueError("modules %s were not called in the forward (their weights may be used without "
                             "calling them, as nn.MultiheadAttention's out_proj): leave them out of modules=" % missing)
        if not called:
            raise ValueError("none of the captured modules was called in the forward")
        A3 = {n: _rows(rec.A[n], B, n) for n, _ in called}
        tk = tokens
        if tk == "auto":
            tk = 1 if rec.A[called[0][0]].dim() > 2 else 0
        rows = {A3[n].shape[1] for n, _ in called}
        if len(rows) != 1 or (tk == 0 and rows != {1}):
            raise ValueError("the captured layers see %s rows per example (%s); a captured file needs the same token "
                             "rows in every layer (leave the others out with modules=)" %
                             (sorted(rows), ", ".join("%s: %d" % (n, A3[n].shape[1]) for n, _ in called)))
        T = rows.pop()
        weights = [m.weight for _, m in called]
        keep = _keep_mask(mask, batch, B, T, losses.device) if tk else None
        torch.autograd.grad(losses.sum(), weights, retain_graph=bool(sample_fisher), allow_unused=True)
        Ds = None
        if sample_fisher:
            rec.phase = "sampled"
            ls = sample_fisher(out, batch, gen) if callable(sample_fisher) else _sampled_ce(out, keep, gen)
            torch.autograd.grad(ls.sum(), weights, allow_unused=True)
    rec.phase = None
    flat_keep = None if keep is None else keep.reshape(-1)
    counts = np.full(B, T, dtype=np.int64) if keep is None else keep.sum(1).cpu().numpy().astype(np.int64)

    def rows_of(t, n, d, what):
        t = _rows(t, B, n).reshape(B * T, d)
        if flat_keep is not None:
            dropped = t[~flat_keep]
            if what != "A" and dropped.numel() and bool((dropped != 0).any()):
                raise ValueError("layer %r: a padding position (mask false) carries gradient; the mask must cover "
                                 "every position the loss reads or attends to" % n)
            t = t[flat_keep]
        return t.float().cpu().numpy()

    A, D, Dsl = [], [], [] if sample_fisher else None
    for n, m in called:
        d_in, d_out = _dims(m)
        A.append(rows_of(rec.A[n], n, d_in, "A"))
        z = torch.zeros(B * T, d_out)
        D.append(rows_of(rec.D[n], n, d_out, "D") if n in rec.D else z[: int(counts.sum())].numpy())
        if sample_fisher:
            Dsl.append(rows_of(rec.Ds[n], n, d_out, "Ds") if n in rec.Ds else z[: int(counts.sum())].numpy())
    rec.clear()
    return {"layers": called, "tokens": tk, "A": A, "D": D, "Ds": Dsl, "loss": losses.detach().float().cpu().numpy(),
            "counts": counts}


# ---- export: an infl run as a torch module ----

_ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


class GPT(nn.Module):
    """infl's GPT (host/models/gpt.c) in torch: token and position embeddings, pre-LayerNorm
    blocks (eps 1e-5) of causal multi-head attention (q | k | v columns of c_attn, head h at
    columns h·hs of each, scores scaled by 1/√hs) and an exact-GELU MLP of 4× width, residuals,
    a final LayerNorm, and the head `lm_head` tied to wte. forward(idx [B, T]) -> logits [B, T, V]."""

    def __init__(self, n_layer, n_head, dim, context, vocab, eot):
        super().__init__()
        self.n_head, self.context, self.eot = n_head, context, eot
        self.wte = nn.Embedding(vocab, dim)
        self.wpe = nn.Embedding(context, dim)
        self.h = nn.ModuleList([_Block(dim, n_head) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(dim, eps=1e-5)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))[None]
        for b in self.h:
            x = b(x)
        return self.lm_head(self.ln_f(x))


class _Attn(nn.Module):
    def __init__(self, dim, n_head):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(dim, 3 * dim)
        self.c_proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, T, C = x.shape
        H = self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.reshape(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
        s = (q @ k.transpose(-2, -1)) / math.sqrt(C // H)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        p = torch.softmax(s.masked_fill(~causal, float("-inf")), dim=-1)
        return self.c_proj((p @ v).transpose(1, 2).reshape(B, T, C))


class _MLP(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.c_fc = nn.Linear(dim, 4 * dim)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * dim, dim)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class _Block(nn.Module):
    def __init__(self, dim, n_head):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = _Attn(dim, n_head)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = _MLP(dim)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


def _pick_checkpoint(c, checkpoint, path):
    names = sorted(c, key=lambda k: int(c[k].attrs["step"]))
    if checkpoint is None or checkpoint == "final":
        return _cap._attr_str(c.attrs["final"]) if "final" in c.attrs else names[-1]
    for k in names:
        if k == str(checkpoint) or str(int(c[k].attrs["step"])) == str(checkpoint):
            return k
    raise ValueError("%s: no checkpoint %r; available: %s or final" % (path, checkpoint, ", ".join(names)))


def export_run(run_path, checkpoint=None):
    """An infl run file as a torch module, float32 on the CPU, in eval mode, with the
    checkpoint's weights (None: the final one). An MLP: nn.Sequential of Linear and the
    activation (its loss in the attribute `infl_loss`: softmax_ce, sigmoid_ce or mse of the
    logits). A GPT: a GPT module (its `infl_loss` next_token_ce; lm_batch() builds the
    inputs and targets infl evaluates)."""
    run_path = os.fspath(run_path)
    with h5py.File(run_path, "r") as f:
        _cap._check_format(f, run_path, "run")
        ma = f["model"].attrs
        kind = _cap._attr_str(ma.get("kind", "mlp"))
        c = f["checkpoints"]
        g = c[_pick_checkpoint(c, checkpoint, run_path)]
        if kind == "mlp":
            widths = [int(w) for w in ma["layers"]]
            act = _cap._attr_str(ma["activation"])
            mods = []
            for l in range(len(widths) - 1):
                lin = nn.Linear(widths[l], widths[l + 1])
                with torch.no_grad():
                    lin.weight.copy_(torch.from_numpy(g["W%d" % l][:]))
                    lin.bias.copy_(torch.from_numpy(g["b%d" % l][:]))
                mods.append(lin)
                if l < len(widths) - 2:
                    mods.append(_ACTS[act]())
            net = nn.Sequential(*mods)
            net.infl_loss = _cap._attr_str(ma["loss"])
        elif kind == "gpt":
            dims = {k: int(ma[k]) for k in ("n_layer", "n_head", "dim", "context", "vocab", "eot")}
            net = GPT(**dims)
            sd = {}
            for name in g:
                key = name
                if name in ("wte", "wpe"):
                    key = name + ".weight"
                elif name.startswith("h") and name[1].isdigit():
                    i, rest = name[1:].split(".", 1)
                    key = "h.%s.%s" % (i, rest)
                sd[key] = torch.from_numpy(g[name][:])
            sd["lm_head.weight"] = sd["wte.weight"]
            net.load_state_dict(sd, strict=True)
            net.infl_loss = "next_token_ce"
        else:
            raise ValueError("%s: /model kind %r: export_run reads mlp and gpt runs" % (run_path, kind))
    return net.eval()


def lm_batch(docs, context, eot):
    """infl's GPT examples (host/models/gpt.c, gpt_forward) of token documents: a document
    of L tokens is n = min(L + 1, context) positions, inputs [EOT, t_0, ..., t_{n-2}] and
    targets [t_0, ..., t_{L-1}, EOT] (cut to n), padded to the longest with target -100.
    Returns (inputs [B, Tb] int64, targets [B, Tb] int64, n [B])."""
    n = [min(len(d) + 1, context) for d in docs]
    Tb = max(n) if n else 1
    inp = torch.full((len(docs), Tb), eot, dtype=torch.int64)
    tgt = torch.full((len(docs), Tb), -100, dtype=torch.int64)
    for i, d in enumerate(docs):
        d = torch.as_tensor(np.asarray(d), dtype=torch.int64)
        full = torch.cat([d, torch.tensor([eot])])
        inp[i, 1:n[i]] = d[: n[i] - 1]
        tgt[i, : n[i]] = full[: n[i]]
    return inp, tgt, torch.tensor(n)


# ---- import: a torch MLP as an infl run ----


def _act_name(m):
    if isinstance(m, nn.ReLU):
        return "relu"
    if isinstance(m, nn.Tanh):
        return "tanh"
    if isinstance(m, nn.GELU) and getattr(m, "approximate", "none") == "none":
        return "gelu"
    return None


def import_mlp(module, path, data=None, lr=1.0, loss="softmax_ce", weight_decay=0.0, step=0, epoch=0.0,
               force=False):
    """Writes an infl run file (one checkpoint) of an nn.Sequential of nn.Linear layers with
    one activation kind between them (ReLU, Tanh or exact GELU), none after the last.
    nn.Flatten, nn.Identity and nn.Dropout are skipped (infl evaluates without dropout); a
    trailing nn.LogSoftmax is dropped for softmax_ce (the cross-entropy of log-probabilities
    equals that of the logits). A Linear without a bias gets a zero one. data: the training
    data reference recorded in the run ('FILE:/split'); lr, step, epoch: the checkpoint's.
    Returns path. `infl eval --run path --data ...` then gives the module's loss and accuracy."""
    if loss not in ("softmax_ce", "sigmoid_ce", "mse"):
        raise ValueError("loss %r: expected softmax_ce, sigmoid_ce or mse" % loss)
    flat = []

    def walk(m):
        if isinstance(m, nn.Sequential):
            for c in m:
                walk(c)
        else:
            flat.append(m)

    if not isinstance(module, nn.Sequential):
        raise TypeError("import_mlp takes an nn.Sequential of Linear and activation layers, not %s" % type(module).__name__)
    walk(module)
    flat = [m for m in flat if not isinstance(m, (nn.Flatten, nn.Identity, nn.Dropout))]
    if flat and isinstance(flat[-1], nn.LogSoftmax) and loss == "softmax_ce":
        flat = flat[:-1]
    linears, act = [], None
    for i, m in enumerate(flat):
        want_linear = i % 2 == 0
        if want_linear:
            if not isinstance(m, nn.Linear):
                raise ValueError("layer %d (%s): expected an nn.Linear here (Linear, activation, Linear, ...)" % (i, m))
            if linears and m.in_features != linears[-1].out_features:
                raise ValueError("layer %d: %s takes %d inputs after a layer of %d outputs" % (i, m, m.in_features, linears[-1].out_features))
            linears.append(m)
        else:
            a = _act_name(m)
            if a is None:
                raise ValueError("layer %d (%s): infl's MLP has ReLU, Tanh or exact GELU between its layers" % (i, m))
            if act is not None and a != act:
                raise ValueError("layer %d: %s after %s; infl's MLP has one activation kind" % (i, a, act))
            act = a
    if not linears or not isinstance(flat[-1], nn.Linear):
        raise ValueError("the module must end with an nn.Linear (the logits)")
    widths = [linears[0].in_features] + [m.out_features for m in linears]
    if loss == "sigmoid_ce" and widths[-1] != 1:
        raise ValueError("sigmoid_ce needs one output; the module has %d" % widths[-1])
    if loss == "softmax_ce" and widths[-1] < 2:
        raise ValueError("softmax_ce needs at least 2 outputs; the module has %d" % widths[-1])
    path = os.fspath(path)
    tmp = _cap._begin_output(path, force)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["infl_format"] = "run"
            f.attrs["infl_version"] = np.int32(1)
            m = f.create_group("model")
            m.attrs["kind"] = "mlp"
            m.attrs["layers"] = np.array(widths, dtype=np.int32)
            m.attrs["activation"] = act or "relu"
            m.attrs["loss"] = loss
            m.attrs["weight_decay"] = np.float64(weight_decay)
            m.attrs["data"] = data or ""
            m.attrs["optimizer"] = ""
            m.attrs["seed"] = np.uint64(0)
            m.attrs["source"] = _describe(module)
            c = f.create_group("checkpoints")
            name = "%06d" % int(step)
            g = c.create_group(name)
            for l, lin in enumerate(linears):
                W = lin.weight.detach().float().cpu().numpy()
                b = (lin.bias.detach().float().cpu().numpy() if lin.bias is not None
                     else np.zeros(lin.out_features, np.float32))
                for what, v in (("W", W), ("b", b)):
                    bad = _cap._first_nonfinite(v)
                    if bad is not None:
                        raise ValueError("layer %d %s: %s at %s; not writing it" % (l, what, bad[2], bad[:2]))
                g.create_dataset("W%d" % l, data=W)
                g.create_dataset("b%d" % l, data=b)
            g.attrs["step"] = np.int64(step)
            g.attrs["epoch"] = np.float64(epoch)
            g.attrs["lr"] = np.float64(lr)
            c.attrs["final"] = name
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
