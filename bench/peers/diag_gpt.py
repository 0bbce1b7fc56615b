"""Layer by layer: where infl's and kronfluence's EK-FAC on a GPT differ.

Reads infl's factors file (`infl fit`: /layer{l}/A_vecs [ni, ni] (rows: eigenvectors),
A_vals, S_vecs [no, no], S_vals, lambda [no, ni], /layer_names) and kronfluence's
factors folder (kronfluence_gpt.py's --workdir: safetensors of activation/gradient
eigenvectors (columns), eigenvalues, lambda_matrix and num_lambda_processed), and for
each attributed layer prints:

  - the spectra of A and S: trace ratio infl/kronfluence and the largest relative
    difference of the eigenvalues (both ascending);
  - Lambda (infl's lambda against kronfluence's lambda_matrix / N): ratio of means,
    and the relative difference elementwise (the eigenvalues come in the same order;
    Lambda does not depend on the eigenvectors' signs);
  - the preconditioners P(G) = Q_S [(Q_S' G Q_A) / (Lambda + damping)] Q_A' of each side
    applied to the queries' gradients, computed here in float64 with autograd on
    export_gpt.py's model: relative difference and cosine;
  - scores per layer: each side's preconditioned queries against the train documents'
    gradients (float64, here), Pearson between the sides, and each layer's share of the
    total; then the sums over layers against the score files, when given (infl's
    /scores .h5, kronfluence's .npy): that separates the factors from the gradients.

    python diag_gpt.py --run gpt.h5 --factors infl_gpt_factors.h5 \
        --kfl /tmp/peers/kronfluence-gpt/infl_peers_gpt/factors_ekfac --damping 1e-3 \
        --train 'fortunes.h5:/train[0:2000]' --query 'fortunes.h5:/test[0:8]' \
        [--infl-scores s.h5] [--kfl-scores k.npy]
"""

import argparse
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import export_gpt
from export_gpt import IGNORE


def _s(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def load_infl_factors(path):
    out = {}
    with h5py.File(path, "r") as f:
        names = [_s(n) for n in f["layer_names"][:]]
        for l, name in enumerate(names):
            g = f[f"layer{l}"]
            out[name] = {"QA": np.asarray(g["A_vecs"]).T, "eA": np.asarray(g["A_vals"]),  # QA columns: eigenvectors
                         "QS": np.asarray(g["S_vecs"]).T, "eS": np.asarray(g["S_vals"]),
                         "lam": np.asarray(g["lambda"])}
        attrs = {k: _s(v) if isinstance(v, (bytes, str)) else v for k, v in f.attrs.items()}
    return out, attrs


def load_kfl_factors(folder):
    ld = lambda n: load_file(f"{folder}/{n}.safetensors")
    QA, eA, QS, eS = ld("activation_eigenvectors"), ld("activation_eigenvalues"), ld("gradient_eigenvectors"), \
        ld("gradient_eigenvalues")
    lam, nl = ld("lambda_matrix"), ld("num_lambda_processed")
    out = {}
    for name in lam:
        out[name] = {"QA": QA[name].double().numpy(), "eA": eA[name].double().numpy(),
                     "QS": QS[name].double().numpy(), "eS": eS[name].double().numpy(),
                     "lam": (lam[name].double() / nl[name].double()).numpy()}
    return out


def precondition(fa, G, damping):
    """Q_S [(Q_S' G Q_A) / (Lambda + damping)] Q_A' for G [..., no, ni]."""
    R = fa["QS"].T @ G @ fa["QA"]
    return fa["QS"] @ (R / (fa["lam"] + damping)) @ fa["QA"].T


def doc_gradients(model, modules, batch):
    """Per-document gradients [B, no, ni] ([W | b]) of each module, float64, from the summed loss."""
    acts, grads, hooks = {}, {}, []
    mods = dict(model.named_modules())
    for n in modules:
        def fwd(mod, inp, out, n=n):
            acts[n] = inp[0].detach()
            out.register_hook(lambda g, n=n: grads.__setitem__(n, g.detach()))
        hooks.append(mods[n].register_forward_hook(fwd))
    logits = model(batch["input_ids"])
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1), ignore_index=IGNORE,
                           reduction="sum")
    loss.backward()
    for h in hooks:
        h.remove()
    out = {}
    for n in modules:
        a = acts[n]
        a1 = torch.cat([a, torch.ones_like(a[..., :1])], dim=-1)
        out[n] = torch.einsum("bto,bti->boi", grads[n], a1).numpy()
    model.zero_grad(set_to_none=True)
    return out


def pearson_rows(a, b):
    return np.array([np.corrcoef(a[i], b[i])[0, 1] for i in range(a.shape[0])])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--checkpoint", default="final")
    p.add_argument("--factors", required=True, help="infl's factors .h5")
    p.add_argument("--kfl", required=True, help="kronfluence's factors folder (…/factors_ekfac)")
    p.add_argument("--damping", type=float, required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--query", required=True)
    p.add_argument("--infl-scores", help="infl rank -o ... --save-scores (/scores [M, N])")
    p.add_argument("--kfl-scores", help="kronfluence_gpt.py's .npy [M, N]")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    run = export_gpt.load_gpt_run(a.run)
    model, ck = export_gpt.build_gpt(run, a.checkpoint)
    model = model.double().eval()
    modules = export_gpt.attributed_modules(run)
    fi, fattrs = load_infl_factors(a.factors)
    fk = load_kfl_factors(a.kfl)
    infl_names = {n.replace("h", "h.", 1) if n[1:2].isdigit() else n: n for n in fi}  # h0.attn.c_attn -> h.0.attn.c_attn
    print(f"infl factors {a.factors}: {({k: fattrs[k] for k in fattrs if k in ('strategy', 'fisher', 'examples', 'checkpoint', 'seed')})}")

    print("\nfactors, per layer (ratio = infl / kronfluence)")
    print(f"{'layer':18s} {'trA ratio':>10s} {'eigA rel':>9s} {'trS ratio':>10s} {'eigS rel':>9s} "
          f"{'meanΛ ratio':>11s} {'Λ rel (max|Λ|)':>14s}")
    for n in modules:
        I, K = fi[infl_names[n]], fk[n]
        rel = lambda x, y: np.abs(x - y).max() / np.abs(y).max()
        print(f"{n:18s} {I['eA'].sum() / K['eA'].sum():10.6f} {rel(I['eA'], K['eA']):9.2e} "
              f"{I['eS'].sum() / K['eS'].sum():10.6f} {rel(I['eS'], K['eS']):9.2e} "
              f"{I['lam'].mean() / K['lam'].mean():11.6f} {rel(I['lam'], K['lam']):14.2e}")

    fn = export_gpt.collate(run.eot)
    qdocs, _ = export_gpt.load_docs(a.query)
    qds = export_gpt.DocDataset(qdocs, run.context, run.eot)
    Gq = {n: [] for n in modules}
    for i in range(len(qds)):  # one query at a time: its own summed loss
        g = doc_gradients(model, modules, fn([qds[i]]))
        for n in modules:
            Gq[n].append(g[n][0])
    Gq = {n: np.stack(v) for n, v in Gq.items()}
    PI = {n: precondition(fi[infl_names[n]], Gq[n], a.damping) for n in modules}
    PK = {n: precondition(fk[n], Gq[n], a.damping) for n in modules}
    print("\npreconditioned query gradients, per layer (mean over queries)")
    print(f"{'layer':18s} {'rel diff':>9s} {'cosine':>9s}")
    for n in modules:
        d = [np.linalg.norm(PI[n][q] - PK[n][q]) / np.linalg.norm(PK[n][q]) for q in range(len(qds))]
        c = [np.sum(PI[n][q] * PK[n][q]) / np.linalg.norm(PI[n][q]) / np.linalg.norm(PK[n][q]) for q in range(len(qds))]
        print(f"{n:18s} {np.mean(d):9.2e} {np.mean(c):9.6f}")

    tdocs, _ = export_gpt.load_docs(a.train)
    tds = export_gpt.DocDataset(tdocs, run.context, run.eot)
    M, N = len(qds), len(tds)
    SI = {n: np.zeros((M, N)) for n in modules}
    SK = {n: np.zeros((M, N)) for n in modules}
    for s in range(0, N, a.batch):
        g = doc_gradients(model, modules, fn([tds[i] for i in range(s, min(N, s + a.batch))]))
        for n in modules:
            SI[n][:, s:s + a.batch] = np.einsum("qoi,boi->qb", PI[n], g[n])
            SK[n][:, s:s + a.batch] = np.einsum("qoi,boi->qb", PK[n], g[n])
    TI, TK = sum(SI.values()), sum(SK.values())
    print(f"\nscores per layer (float64 gradients here; {M} queries x {N} train documents)")
    print(f"{'layer':18s} {'Pearson':>9s} {'(min)':>9s} {'share infl':>10s} {'share kfl':>10s}")
    for n in modules:
        r = pearson_rows(SI[n], SK[n])
        shI = np.mean(np.linalg.norm(SI[n], axis=1) / np.linalg.norm(TI, axis=1))
        shK = np.mean(np.linalg.norm(SK[n], axis=1) / np.linalg.norm(TK, axis=1))
        print(f"{n:18s} {r.mean():9.6f} {r.min():9.6f} {shI:10.4f} {shK:10.4f}")
    r = pearson_rows(TI, TK)
    print(f"{'all layers':18s} {r.mean():9.6f} {r.min():9.6f}")
    if a.infl_scores:
        with h5py.File(a.infl_scores, "r") as f:
            S = np.asarray(f["scores"], dtype=np.float64)
        r = pearson_rows(S, TI)
        print(f"infl's /scores vs infl's factors with these gradients: Pearson mean {r.mean():.6f} (min {r.min():.6f}), "
              f"scale {np.sum(S * TI) / np.sum(TI * TI):.6f}")
    if a.kfl_scores:
        S = np.load(a.kfl_scores).astype(np.float64)
        r = pearson_rows(S, TK)
        print(f"kronfluence's scores vs its factors with these gradients: Pearson mean {r.mean():.6f} (min {r.min():.6f}), "
              f"scale {np.sum(S * TK) / np.sum(TK * TK):.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
