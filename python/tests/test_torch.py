"""Tests of infl.torch (skipped where torch is not installed, as in CI): capture hooks
against the NumPy reference of infl's MLP and against infl's own ranking of the same run;
exported MLP and GPT modules against `infl eval`; an imported torch MLP evaluated by infl
as torch evaluates it; the CLI on a torch-captured file (skipped while infl has no captured
support). The CLI: $INFL_BIN, default build/infl of the repository."""

import os
import re
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (CI has no torch; run these where it is)")
h5py = pytest.importorskip("h5py", reason="h5py is not installed (Debian: python3-h5py)")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_captured import (INFL, assert_numpy_scores_rank_as_infl, assert_same, captured_supported,  # noqa: E402,F401
                           infl, mlp_files, numpy_scores, scores)

from infl import captured as cap  # noqa: E402
from infl import torch as it  # noqa: E402
from torch import nn  # noqa: E402


def eval_numbers(run, data):
    out = infl("eval", "--run", run, "--data", data, "-q").stdout
    m = re.search(r"loss ([0-9.]+)(?:  accuracy ([0-9.]+)%)?", out)
    assert m, out
    return float(m.group(1)), (float(m.group(2)) / 100 if m.group(2) else None)


def batches_of(x, y, b):
    return [(torch.from_numpy(x[i:i + b]), torch.from_numpy(y[i:i + b].astype(np.int64))) for i in range(0, len(x), b)]


def ce_loss(out, batch):
    return it.token_ce(out, batch[1])


@pytest.fixture(scope="module")
def torch_capture(mlp_files):
    """The run of mlp_files captured through the torch hooks: its modules exported from the
    run at every checkpoint, batches of 7 rows (not the reference's 256)."""
    run = cap.read_mlp_run(mlp_files["run"])
    tr, te = cap.read_split(mlp_files["data"] + ":/train"), cap.read_split(mlp_files["data"] + ":/test")
    model = it.export_run(mlp_files["run"])
    cks = [(it.export_run(mlp_files["run"], c["name"]).state_dict(), c["lr"], c["step"], c["epoch"])
           for c in run["checkpoints"]]
    path = str(mlp_files["dir"] / "torchcap.h5")
    it.capture(model, ce_loss, {"train": batches_of(tr["x"], tr["y"], 7), "test": batches_of(te["x"], te["y"], 7)},
               path, checkpoints=cks, labels=lambda b: b[1], weight_decay=run["weight_decay"], force=True)
    return dict(mlp_files, tcap=path)


def test_capture_equals_numpy_reference(torch_capture):
    with h5py.File(torch_capture["tcap"], "r") as t, h5py.File(torch_capture["cap"], "r") as r:
        assert t["model"].attrs["tokens"] == 0 and list(t["model"].attrs["d_in"]) == list(r["model"].attrs["d_in"])
        assert list(t["checkpoints"]) == list(r["checkpoints"])
        assert t["checkpoints"].attrs["final"] == r["checkpoints"].attrs["final"]
        np.testing.assert_array_equal(t["train/y"][:], r["train/y"][:])
        for name in r["checkpoints"]:
            gt, gr = t["checkpoints"][name], r["checkpoints"][name]
            assert gt.attrs["lr"] == gr.attrs["lr"] and gt.attrs["step"] == gr.attrs["step"]
            for l in range(3):
                np.testing.assert_array_equal(gt["W%d" % l][:], gr["W%d" % l][:])
                for split in ("train", "test"):
                    for k in ("A", "D"):
                        a, b = gt["%s/layer%d/%s" % (split, l, k)][:], gr["%s/layer%d/%s" % (split, l, k)][:]
                        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())
            np.testing.assert_allclose(gt["train/loss"][:], gr["train/loss"][:], rtol=1e-5)


@pytest.mark.parametrize("method", ["tracin", "graddot"])
def test_torch_captured_scores_as_infl_ranks_the_run(torch_capture, method):
    t = torch_capture
    assert_numpy_scores_rank_as_infl(t, "t", t["tcap"], numpy_scores, method, t["run"], t["data"] + ":/train",
                                     t["data"] + ":/test", 4)


@pytest.mark.parametrize("method", ["tracin", "graddot", "gradcos", "ekfac", "kfac", "self-tracin"])
def test_cli_on_torch_capture_equals_run(torch_capture, method):
    c, run, data, d = torch_capture["tcap"], torch_capture["run"], torch_capture["data"], torch_capture["dir"]
    captured_supported(c)
    cmd = "self" if method.startswith("self") else "rank"
    meth = method.split("-")[-1]
    extra_r, extra_c = [], []
    if meth in ("ekfac", "kfac"):
        fr, fc = str(d / ("tfr-%s.h5" % meth)), str(d / ("tfc-%s.h5" % meth))
        infl("fit", "--run", run, "--data", data + ":/train", "--strategy", meth, "--fisher", "empirical", "-o", fr,
             "--force", "-q")
        infl("fit", "--run", c, "--data", c + ":/train", "--strategy", meth, "--fisher", "empirical", "-o", fc,
             "--force", "-q")
        extra_r, extra_c = ["--factors", fr], ["--factors", fc]
    q_r = ["--query", data + ":/test", "--top", 4] if cmd == "rank" else []
    q_c = ["--query", c + ":/test", "--top", 4] if cmd == "rank" else []
    a = scores(torch_capture, "tr-%s.h5" % method, cmd, "--run", run, "--train", data + ":/train", "--method", meth,
               *q_r, *extra_r)
    b = scores(torch_capture, "tc-%s.h5" % method, cmd, "--run", c, "--train", c + ":/train", "--method", meth,
               *q_c, *extra_c)
    assert_same(a, b)


# ---- capture on sequences: token rows, masks, sampled Fisher ----


class TinySeq(nn.Module):
    """A sequence model with a token-mixing step (causal cumulative mean), so that a row's
    gradient depends on later positions; its head reads every position."""

    def __init__(self, d=5, k=4):
        super().__init__()
        self.inp = nn.Linear(3, d)
        self.mix = nn.Linear(d, d, bias=False)
        self.head = nn.Linear(d, k)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        c = torch.cumsum(h, dim=1) / torch.arange(1, x.shape[1] + 1)[None, :, None]
        return self.head(torch.relu(self.mix(c)))


def seq_loss(out, batch):
    return it.token_ce(out, batch[1])


def test_capture_token_rows_with_mask_are_each_examples_gradient(tmp_path):
    torch.manual_seed(0)
    model = TinySeq()
    x = torch.randn(5, 6, 3)
    lens = torch.tensor([6, 2, 4, 1, 6])
    y = torch.randint(0, 4, (5, 6))
    y[torch.arange(6)[None, :] >= lens[:, None]] = -100
    batches = [(x[:3], y[:3], lens[:3]), (x[3:], y[3:], lens[3:])]
    path = str(tmp_path / "seq.h5")
    it.capture(model, seq_loss, {"train": batches}, path, mask=lambda b: b[2], sample_fisher=True, seed=1)
    with h5py.File(path, "r") as f:
        assert f["model"].attrs["tokens"] == 1
        assert [n.decode() if isinstance(n, bytes) else n for n in f["model/names"][:]] == ["inp", "mix", "head"]
        off = f["train/offsets"][:]
        assert list(off) == [0, 6, 8, 12, 13, 19]
        g = f["checkpoints/000000/train"]
        for i in range(5):
            # example i alone: its own gradient of every weight, against Σ_t δ_t ã_tᵀ of its rows
            model.zero_grad()
            seq_loss(model(x[i:i + 1, :lens[i]]), (None, y[i:i + 1, :lens[i]])).sum().backward()
            for l, m in enumerate([model.inp, model.mix, model.head]):
                A = g["layer%d/A" % l][off[i]:off[i + 1]]
                D = g["layer%d/D" % l][off[i]:off[i + 1]]
                np.testing.assert_allclose(D.T @ A, m.weight.grad.numpy(), rtol=1e-4, atol=1e-6)
                if m.bias is not None:
                    np.testing.assert_allclose(D.sum(0), m.bias.grad.numpy(), rtol=1e-4, atol=1e-6)
                assert g["layer%d/Ds" % l].shape == g["layer%d/D" % l].shape
            np.testing.assert_allclose(g["loss"][i], seq_loss(model(x[i:i + 1, :lens[i]]),
                                                              (None, y[i:i + 1, :lens[i]])).item(), rtol=1e-5)
        assert np.abs(g["layer2/Ds"][:]).max() > 0


def test_capture_refuses_what_it_cannot_store(tmp_path):
    torch.manual_seed(0)
    model = TinySeq()
    x, y = torch.randn(2, 4, 3), torch.randint(0, 4, (2, 4))
    # a mask that hides positions the loss still reads
    with pytest.raises(ValueError, match="padding position .* carries gradient"):
        it.capture(model, seq_loss, {"train": [(x, y)]}, str(tmp_path / "a.h5"), mask=lambda b: torch.tensor([4, 2]))
    # a mean over the batch instead of per-example losses
    with pytest.raises(ValueError, match=r"per-example losses \[B\]"):
        it.capture(model, lambda o, b: it.token_ce(o, b[1]).mean(), {"train": [(x, y)]}, str(tmp_path / "b.h5"))
    # a model whose layers see different rows per example
    pooled = nn.Sequential(nn.Linear(3, 4), nn.Flatten(1), nn.Linear(16, 2))
    with pytest.raises(ValueError, match="same token rows in every layer"):
        it.capture(pooled, lambda o, b: it.token_ce(o, b[1]), {"train": [(x, torch.tensor([0, 1]))]},
                   str(tmp_path / "c.h5"))
    assert not os.listdir(tmp_path)
    # the model is left as it was
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_capture_hooks_hf_style_conv1d_and_inplace_relu(tmp_path):
    class Conv1D(nn.Module):  # Hugging Face's layout: weight [d_in, d_out], y = x W + b
        def __init__(self, nf, nx):
            super().__init__()
            self.nf = nf
            self.weight = nn.Parameter(torch.randn(nx, nf) * 0.5)
            self.bias = nn.Parameter(torch.randn(nf) * 0.1)

        def forward(self, x):
            return x @ self.weight + self.bias

    torch.manual_seed(0)
    model = nn.Sequential(Conv1D(4, 3), nn.ReLU(inplace=True), nn.Linear(4, 3))
    x, y = torch.randn(6, 3), torch.randint(0, 3, (6,))
    path = str(tmp_path / "c.h5")
    it.capture(model, lambda o, b: it.token_ce(o, b[1]), {"train": [(x, y)]}, path)
    assert model[1].inplace
    with h5py.File(path, "r") as f:
        g = f["checkpoints/000000"]
        np.testing.assert_array_equal(g["W0"][:], model[0].weight.detach().numpy().T)
        for i in range(6):
            model.zero_grad()
            it.token_ce(model(x[i:i + 1]), y[i:i + 1]).sum().backward()
            A, D = g["train/layer0/A"][i], g["train/layer0/D"][i]
            np.testing.assert_allclose(np.outer(D, A), model[0].weight.grad.numpy().T, rtol=1e-5, atol=1e-7)


# ---- export and import against infl eval ----


def test_export_mlp_reproduces_infl_eval(mlp_files):
    net = it.export_run(mlp_files["run"])
    assert net.infl_loss == "softmax_ce"
    for split in ("train", "test"):
        s = cap.read_split(mlp_files["data"] + ":/" + split)
        with torch.no_grad():
            z = net(torch.from_numpy(s["x"]))
        y = torch.from_numpy(s["y"].astype(np.int64))
        loss, acc = eval_numbers(mlp_files["run"], mlp_files["data"] + ":/" + split)
        assert abs(torch.nn.functional.cross_entropy(z, y).item() - loss) <= 6e-5
        assert abs((z.argmax(1) == y).float().mean().item() - acc) <= 5.1e-5  # printed as a percentage with 2 decimals


@pytest.mark.parametrize("act", [nn.ReLU, nn.Tanh, nn.GELU])
def test_import_mlp_evaluates_as_torch(mlp_files, tmp_path, act):
    torch.manual_seed(3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 7), act(), nn.Linear(7, 5), act(), nn.Linear(5, 3))
    path = str(tmp_path / "imported.h5")
    it.import_mlp(net, path, data=mlp_files["data"] + ":/train")
    with pytest.raises(FileExistsError):
        it.import_mlp(net, path)
    s = cap.read_split(mlp_files["data"] + ":/test")
    with torch.no_grad():
        z = net(torch.from_numpy(s["x"]))
    y = torch.from_numpy(s["y"].astype(np.int64))
    loss, acc = eval_numbers(path, mlp_files["data"] + ":/test")
    assert abs(torch.nn.functional.cross_entropy(z, y).item() - loss) <= 6e-5
    assert abs((z.argmax(1) == y).float().mean().item() - acc) <= 5.1e-5  # printed as a percentage with 2 decimals
    # and back: the exported module is the imported one
    back = it.export_run(path)
    with torch.no_grad():
        np.testing.assert_array_equal(back(torch.from_numpy(s["x"])).numpy(), z.numpy())


def test_import_mlp_refuses_other_modules(tmp_path):
    with pytest.raises(ValueError, match="ReLU, Tanh or exact GELU"):
        it.import_mlp(nn.Sequential(nn.Linear(2, 3), nn.Sigmoid(), nn.Linear(3, 2)), str(tmp_path / "a.h5"))
    with pytest.raises(ValueError, match="one activation kind"):
        it.import_mlp(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2)),
                      str(tmp_path / "b.h5"))
    with pytest.raises(ValueError, match="end with an nn.Linear"):
        it.import_mlp(nn.Sequential(nn.Linear(2, 3), nn.ReLU()), str(tmp_path / "c.h5"))
    assert not os.listdir(tmp_path)


TEXT = "\n\n".join("%s the %s %s %d." % (a, b, c, i) for i, (a, b, c) in enumerate(
    [(a, b, c) for a in ("A cat", "The dog", "Some bird", "One fish") for b in ("red", "slow", "tiny")
     for c in ("sat", "ran", "sang", "swam")]))


@pytest.fixture(scope="module")
def gpt_files(tmp_path_factory):
    if not os.access(INFL, os.X_OK):
        pytest.skip("no infl binary at %s (set INFL_BIN)" % INFL)
    d = tmp_path_factory.mktemp("gpt")
    txt, docs, run = d / "t.txt", str(d / "docs.h5"), str(d / "gpt.h5")
    txt.write_text(TEXT + "\n")
    infl("import", "text", str(txt), "--sep", "paragraph", "--test-fraction", 0.25, "--seed", 1, "-o", docs, "-q")
    infl("train", "--model", "gpt", "--data", docs + ":/train", "--layers", 2, "--heads", 2, "--dim", 16,
         "--context", 16, "--epochs", 2, "--batch", 8, "--lr", 3e-3, "--warmup", 2, "--checkpoint-every", 4, "-o", run,
         "-q")
    return {"dir": d, "docs": docs, "run": run}


def test_export_gpt_reproduces_infl_eval(gpt_files):
    net = it.export_run(gpt_files["run"])
    for split in ("train", "test"):
        ds = cap.read_documents(gpt_files["docs"] + ":/" + split)
        inp, tgt, n = it.lm_batch(ds["docs"], net.context, ds["eot"])
        with torch.no_grad():
            per_token = it.token_ce(net(inp), tgt).sum().item() / n.sum().item()
        out = infl("eval", "--run", gpt_files["run"], "--data", gpt_files["docs"] + ":/" + split, "-q").stdout
        m = re.search(r"loss ([0-9.]+) nats/token", out)
        assert m, out
        assert abs(per_token - float(m.group(1))) <= 6e-5, (per_token, out)
        assert "truncated" in out  # some documents are longer than the context: lm_batch cuts them as infl does


@pytest.fixture(scope="module")
def gpt_capture(gpt_files):
    """The GPT run exported at every checkpoint and captured through the hooks with token
    rows (documents padded per batch of 5, the padding masked out), its four linear layers
    per block (the tied head left out, as infl's own GPT attribution does)."""
    run, docs, d = gpt_files["run"], gpt_files["docs"], gpt_files["dir"]
    path = str(d / "gptcap.h5")
    with h5py.File(run, "r") as f:
        c = f["checkpoints"]
        cks = [(k, float(c[k].attrs["lr"]), int(c[k].attrs["step"]), float(c[k].attrs["epoch"])) for k in c]
    net = it.export_run(run)
    splits = {}
    for split in ("train", "test"):
        ds = cap.read_documents(docs + ":/" + split)
        splits[split] = [it.lm_batch(ds["docs"][i:i + 5], net.context, ds["eot"]) for i in range(0, len(ds["docs"]), 5)]
    it.capture(net, lambda out, b: it.token_ce(out, b[1]), splits, path,
               checkpoints=[(it.export_run(run, k).state_dict(), lr, step, ep) for k, lr, step, ep in cks],
               modules=lambda name, m: name != "lm_head", mask=lambda b: b[2])
    with h5py.File(path, "r") as f:
        assert f["model"].attrs["tokens"] == 1 and len(f["model/names"]) == 8
        assert f["test/offsets"][-1] == sum(min(len(x) + 1, net.context) for x in cap.read_documents(docs + ":/test")["docs"])
    return dict(gpt_files, cap=path)


@pytest.mark.parametrize("method", ["tracin", "graddot", "self-graddot", "self-tracin", "ekfac"])
def test_cli_on_captured_gpt_equals_gpt_run(gpt_capture, method):
    """infl ranks the captured GPT as it ranks the GPT run itself."""
    run, docs, c, d = gpt_capture["run"], gpt_capture["docs"], gpt_capture["cap"], gpt_capture["dir"]
    captured_supported(c)
    cmd = "self" if method.startswith("self") else "rank"
    meth = method.split("-")[-1]
    extra_r, extra_c = [], []
    if meth == "ekfac":
        fr, fc = str(d / "gfr.h5"), str(d / "gfc.h5")
        infl("fit", "--run", run, "--data", docs + ":/train", "--fisher", "empirical", "-o", fr, "--force", "-q")
        infl("fit", "--run", c, "--data", c + ":/train", "--fisher", "empirical", "-o", fc, "--force", "-q")
        extra_r, extra_c = ["--factors", fr], ["--factors", fc]
    q_r = ["--query", docs + ":/test", "--top", 3] if cmd == "rank" else []
    q_c = ["--query", c + ":/test", "--top", 3] if cmd == "rank" else []
    a = scores(gpt_capture, "gr-%s.h5" % method, cmd, "--run", run, "--train", docs + ":/train", "--method", meth,
               *q_r, *extra_r)
    b = scores(gpt_capture, "gc-%s.h5" % method, cmd, "--run", c, "--train", c + ":/train", "--method", meth,
               *q_c, *extra_c)
    assert_same(a, b)


@pytest.mark.parametrize("method", ["tracin", "graddot"])
def test_captured_gpt_content_scores_as_infl_ranks_the_gpt_run(gpt_capture, method):
    """Without infl's captured reader: document gradients formed from the torch-captured
    token rows equal infl's own ranking of the GPT run."""
    g = gpt_capture
    assert_numpy_scores_rank_as_infl(g, "gd", g["cap"], numpy_scores, method, g["run"], g["docs"] + ":/train",
                                     g["docs"] + ":/test", 3)
