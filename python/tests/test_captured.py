"""Tests of infl.captured: the NumPy reference MLP against finite differences, the
CapturedWriter's file against the format (CAPTURED.md) and its refusals, and — through
the CLI — a captured file of an infl MLP run ranked exactly as infl ranks the run itself
(skipped while the infl binary has no captured support). Needs numpy, h5py, pytest
(Debian's python3-*); no torch. The CLI: $INFL_BIN, default build/infl of the repository."""

import os
import subprocess
import sys

import numpy as np
import pytest

h5py = pytest.importorskip("h5py", reason="h5py is not installed (Debian: python3-h5py)")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))

from infl import captured as cap  # noqa: E402

INFL = os.environ.get("INFL_BIN") or os.environ.get("INFL_CLI") or os.path.join(ROOT, "build", "infl")


# ---- the NumPy reference MLP: gradients against central finite differences ----


@pytest.mark.parametrize("act", ["relu", "tanh", "gelu"])
@pytest.mark.parametrize("loss", ["softmax_ce", "sigmoid_ce", "mse"])
def test_reference_mlp_gradients(act, loss):
    rng = np.random.default_rng(1)
    widths = [4, 5, 3, 1 if loss == "sigmoid_ce" else 3]
    ws = [(rng.standard_normal((widths[l + 1], widths[l])), rng.standard_normal(widths[l + 1]))
          for l in range(3)]
    x = rng.standard_normal((6, 4))
    y = (rng.integers(0, 2 if loss == "sigmoid_ce" else 3, 6) if loss != "mse"
         else rng.standard_normal((6, widths[-1])))
    A, D, losses, _ = cap.mlp_factors(ws, act, loss, x, y)
    eps = 1e-6
    for i in range(x.shape[0]):
        for l in range(3):
            g = np.outer(D[l][i], A[l][i])  # example i's ∂ℓ_i/∂W_l
            for (o, c) in [(0, 0), (widths[l + 1] - 1, widths[l] - 1)]:
                wp = [(W.copy(), b.copy()) for W, b in ws]
                wm = [(W.copy(), b.copy()) for W, b in ws]
                wp[l][0][o, c] += eps
                wm[l][0][o, c] -= eps
                fd = (cap.mlp_factors(wp, act, loss, x[i:i + 1], y[i:i + 1])[2][0]
                      - cap.mlp_factors(wm, act, loss, x[i:i + 1], y[i:i + 1])[2][0]) / (2 * eps)
                assert abs(fd - g[o, c]) <= 1e-5 * (1 + abs(fd)), (i, l, o, c, fd, g[o, c])
            # the bias: ∂ℓ_i/∂b_l = δ_l
            bp = [(W.copy(), b.copy()) for W, b in ws]
            bm = [(W.copy(), b.copy()) for W, b in ws]
            bp[l][1][0] += eps
            bm[l][1][0] -= eps
            fd = (cap.mlp_factors(bp, act, loss, x[i:i + 1], y[i:i + 1])[2][0]
                  - cap.mlp_factors(bm, act, loss, x[i:i + 1], y[i:i + 1])[2][0]) / (2 * eps)
            assert abs(fd - D[l][i][0]) <= 1e-5 * (1 + abs(fd))


# ---- the writer ----

LAYERS = [("0", 3, 4, 1), ("2", 4, 2, 0)]


def weights(rng):
    return {"0": (rng.standard_normal((4, 3)), rng.standard_normal(4)), "2": (rng.standard_normal((2, 4)), None)}


def batch(rng, rows, nex=None):
    A = [rng.standard_normal((rows, 3)), rng.standard_normal((rows, 4))]
    D = [rng.standard_normal((rows, 4)), rng.standard_normal((rows, 2))]
    return A, D, rng.standard_normal(rows if nex is None else nex)


def test_writer_file_is_the_format(tmp_path):
    rng = np.random.default_rng(0)
    path = str(tmp_path / "c.h5")
    ws = [weights(rng), weights(rng)]
    data = {}
    with cap.CapturedWriter(path, LAYERS, outputs=2, tokens=0, source="test", loss="ce") as w:
        w.add_split("train", n=5, y=np.array([0, 1, 0, 1, 1]), flipped=np.array([0, 0, 1, 0, 0]))
        w.add_split("test", n=2)
        for step, lr, W in ((0, 0.5, ws[0]), (10, 0.25, ws[1])):
            w.begin_checkpoint(step, lr, epoch=step / 10, weights=W)
            parts = [batch(rng, 3), batch(rng, 2)]
            for A, D, l in parts:
                w.append("train", A, D, l)
            A, D, l = batch(rng, 2)
            w.append("test", A, D, l, Ds_list=[d * 2 for d in D])
            data[step] = (parts, (A, D, l))
        assert not os.path.exists(path)  # written under a temporary name until close
    with h5py.File(path, "r") as f:
        assert f.attrs["infl_format"] == "captured" and int(f.attrs["infl_version"]) == 1
        m = f["model"]
        assert m.attrs["kind"] == "captured"
        for k, v in (("d_in", [3, 4]), ("d_out", [4, 2]), ("bias", [1, 0])):
            assert m.attrs[k].dtype == np.int32 and list(m.attrs[k]) == v
        assert m.attrs["outputs"].dtype == np.int32 and m.attrs["tokens"] == 0
        assert [s.decode() if isinstance(s, bytes) else s for s in m["names"][:]] == ["0", "2"]
        assert f["checkpoints"].attrs["final"] == "000010"
        assert list(f["train/offsets"][:]) == list(range(6)) and f["train/offsets"].dtype == np.int64
        assert f["train"].attrs["n"] == 5 and list(f["train/flipped"][:]) == [0, 0, 1, 0, 0]
        assert list(f["train/y"][:]) == [0, 1, 0, 1, 1] and f["train/y"].dtype == np.int32
        for step, W in ((0, ws[0]), (10, ws[1])):
            g = f["checkpoints/%06d" % step]
            assert g.attrs["step"].dtype == np.int64 and g.attrs["lr"].dtype == np.float64
            assert g.attrs["lr"] == (0.5 if step == 0 else 0.25) and g.attrs["epoch"] == step / 10
            np.testing.assert_array_equal(g["W0"][:], W["0"][0].astype(np.float32))
            np.testing.assert_array_equal(g["b0"][:], W["0"][1].astype(np.float32))
            assert "b1" not in g and g["W1"].shape == (2, 4)
            parts, (tA, tD, tl) = data[step]
            for l in range(2):
                np.testing.assert_array_equal(g["train/layer%d/A" % l][:], np.concatenate([p[0][l] for p in parts]).astype(np.float32))
                np.testing.assert_array_equal(g["train/layer%d/D" % l][:], np.concatenate([p[1][l] for p in parts]).astype(np.float32))
                assert "Ds" not in g["train/layer%d" % l]
                np.testing.assert_array_equal(g["test/layer%d/Ds" % l][:], (2 * tD[l]).astype(np.float32))
            np.testing.assert_array_equal(g["train/loss"][:], np.concatenate([p[2] for p in parts]).astype(np.float32))
            assert g["train/layer0/A"].dtype == np.float32


def test_writer_token_rows_from_counts(tmp_path):
    rng = np.random.default_rng(0)
    path = str(tmp_path / "t.h5")
    w = cap.CapturedWriter(path, LAYERS, tokens=1)
    w.add_split("train")
    w.begin_checkpoint(0, 1.0, weights=weights(rng))
    for counts in ([2, 0, 3], [1]):
        A, D, _ = batch(rng, sum(counts))
        w.append("train", A, D, rng.standard_normal(len(counts)), counts=counts)
    w.begin_checkpoint(1, 1.0, weights=weights(rng))
    A, D, _ = batch(rng, 5)
    w.append("train", A, D, rng.standard_normal(3), counts=[2, 0, 3])
    A, D, _ = batch(rng, 2)
    with pytest.raises(ValueError, match=r"example 3 has 2 rows; its offsets say 1"):
        w.append("train", A, D, rng.standard_normal(1), counts=[2])
    A, D, _ = batch(rng, 1)
    w.append("train", A, D, rng.standard_normal(1), counts=[1])
    w.close()
    with h5py.File(path, "r") as f:
        assert list(f["train/offsets"][:]) == [0, 2, 2, 5, 6]
        assert f["checkpoints/000001/train/layer1/D"].shape == (6, 2)


def test_writer_refuses(tmp_path):
    rng = np.random.default_rng(0)
    path = str(tmp_path / "r.h5")
    open(path, "w").close()
    with pytest.raises(FileExistsError, match="exists; pass force=True"):
        cap.CapturedWriter(path, LAYERS)
    w = cap.CapturedWriter(path, LAYERS, force=True)
    w.add_split("train", n=3)
    with pytest.raises(ValueError, match="before any begin_checkpoint"):
        w.append("train", *batch(rng, 1))
    with pytest.raises(ValueError, match=r"W is \[3, 4\]; expected \[d_out, d_in\] = \[4, 3\]"):
        w.begin_checkpoint(0, 1.0, weights={"0": (np.zeros((3, 4)), np.zeros(4)), "2": np.zeros((2, 4))})
    w.begin_checkpoint(1, 1.0, weights=weights(rng))
    A, D, l = batch(rng, 2)
    D[1][1, 1] = np.nan
    with pytest.raises(ValueError, match=r"split 'train' layer 1 \(2\) D row 1 \(example 1\) column 1: NaN"):
        w.append("train", A, D, l)
    A, D, l = batch(rng, 2)
    A[0] = A[0][:, :2]
    with pytest.raises(ValueError, match=r"layer 0 \(0\) A: shape \[2, 2\]; expected \[2 rows, 3\]"):
        w.append("train", A, D, l)
    A, D, l = batch(rng, 2)
    A[1] = np.ones((2, 4), dtype=np.int32)
    with pytest.raises(TypeError, match="expected a floating-point array, found dtype int32"):
        w.append("train", A, D, l)
    A, D, l = batch(rng, 2)
    l[0] = np.inf
    with pytest.raises(ValueError, match=r"loss entry 0: \+Inf"):
        w.append("train", A, D, l)
    w.append("train", *batch(rng, 2))
    with pytest.raises(ValueError, match="examples 2..3 appended; the split has 3"):
        w.append("train", *batch(rng, 2))
    with pytest.raises(ValueError, match="Ds given in some appends and not in others"):
        A, D, l = batch(rng, 1)
        w.append("train", A, D, l, Ds_list=D)
    with pytest.raises(KeyError, match="no split 'test'"):
        w.append("test", *batch(rng, 1))
    # the checkpoint ends with train incomplete: refused, and nothing is left behind
    with pytest.raises(ValueError, match=r"2 examples \(2 rows\) written; the split has 3"):
        w.close()
    assert os.path.getsize(path) == 0 and not [p for p in os.listdir(tmp_path) if ".tmp." in p]


def test_writer_aborts_inside_with(tmp_path):
    path = str(tmp_path / "a.h5")
    with pytest.raises(RuntimeError):
        with cap.CapturedWriter(path, LAYERS) as w:
            w.add_split("train", n=1)
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="no checkpoint was written"):
        with cap.CapturedWriter(path, LAYERS):
            pass
    assert os.listdir(tmp_path) == []


# ---- through the CLI: a captured file of an infl MLP run ranks as the run itself ----


def infl(*args, check=True):
    r = subprocess.run([INFL, *map(str, args)], capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="passive"))
    if check and r.returncode != 0:
        raise AssertionError("infl %s failed (%d): %s" % (" ".join(map(str, args)), r.returncode, r.stderr))
    return r


def captured_supported(path):
    """Whether this infl reads captured files: a run of them, or the reason to skip."""
    r = infl("self", "--run", path, "--train", path + ":/train", "--method", "graddot", "-q", check=False)
    if r.returncode != 0 and ("expected 'run'" in r.stderr or "captured" in r.stderr and "unknown" in r.stderr):
        pytest.skip("infl has no captured support (%s)" % r.stderr.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def mlp_files(tmp_path_factory):
    """A tiny infl MLP run with weight decay (EK-FAC adds it to every eigenvalue: the capture
    records it) and its captured twin written through the NumPy reference."""
    if not os.access(INFL, os.X_OK):
        pytest.skip("no infl binary at %s (set INFL_BIN)" % INFL)
    d = tmp_path_factory.mktemp("mlp")
    data, run, capf = str(d / "syn.h5"), str(d / "run.h5"), str(d / "cap.h5")
    infl("synth", "-o", data, "--n", 64, "--d", 6, "--classes", 3, "--test", 5, "--seed", 3, "-q")
    infl("train", "--data", data + ":/train", "--layers", "6,5,4,3", "--activation", "tanh", "--epochs", 2,
         "--batch", 16, "--lr", 0.2, "--wd", 0.01, "--checkpoint-every", 3, "--seed", 2, "-o", run, "-q")
    cap.captured_from_run(capf, run, {"train": data + ":/train", "test": data + ":/test"})
    return {"dir": d, "data": data, "run": run, "cap": capf}


@pytest.fixture(scope="module")
def mlp_case(mlp_files):
    captured_supported(mlp_files["cap"])
    return mlp_files


def numpy_scores(path, checkpoints, tracin):
    """TracIn (lr-weighted over the checkpoints) or grad-dot scores [M, N] of /test against
    /train from a captured file, in float64 with h5py alone: each example's gradient per
    layer Σ_t δ_t ã_tᵀ over its rows (offsets; one row without tokens), dotted."""
    with h5py.File(path, "r") as f:
        bias = f["model"].attrs["bias"]
        S = 0
        for name in checkpoints:
            g = f["checkpoints"][name]
            lr = g.attrs["lr"] if tracin else 1.0
            for l in range(len(bias)):
                def grads(split):
                    off = f[split + "/offsets"][:]
                    A = g["%s/layer%d/A" % (split, l)][:].astype(np.float64)
                    if bias[l]:
                        A = np.hstack([A, np.ones((A.shape[0], 1))])
                    D = g["%s/layer%d/D" % (split, l)][:].astype(np.float64)
                    return np.stack([(D[off[i]:off[i + 1]].T @ A[off[i]:off[i + 1]]).ravel()
                                     for i in range(len(off) - 1)])
                S = S + lr * grads("test") @ grads("train").T
        return S


def assert_numpy_scores_rank_as_infl(case, tag, cap_path, score_fn, method, run, train, query, top):
    """Scores [M, N] that score_fn(cap_path, checkpoint names, tracin) forms from a captured
    file with NumPy alone equal `infl rank` of the run (top-k indices exactly, scores to 1e-4):
    the format's meaning (D each example's own loss gradient, lr TracIn's weight)."""
    with h5py.File(cap_path, "r") as f:
        names = sorted(f["checkpoints"]) if method == "tracin" else [f["checkpoints"].attrs["final"]]
    S = score_fn(cap_path, names, method == "tracin")
    ref = scores(case, "%s-%s.h5" % (tag, method), "rank", "--run", run, "--train", train, "--query", query,
                 "--method", method, "--top", top)
    order = np.argsort(-S, axis=1, kind="stable")[:, :top]
    np.testing.assert_array_equal(order, ref["topk/index"])
    top_scores = np.take_along_axis(S, order, axis=1)
    np.testing.assert_allclose(top_scores, ref["topk/score"], rtol=1e-4, atol=1e-4 * np.abs(S).max())


@pytest.mark.parametrize("method", ["tracin", "graddot"])
def test_captured_content_scores_as_infl_ranks_the_run(mlp_files, method):
    """Without infl's captured reader: scores formed from the NumPy reference's captured
    file equal infl's own ranking of the run."""
    assert_numpy_scores_rank_as_infl(mlp_files, "g", mlp_files["cap"], numpy_scores, method, mlp_files["run"],
                                     mlp_files["data"] + ":/train", mlp_files["data"] + ":/test", 4)


def scores(case, name, *args):
    out = str(case["dir"] / name)
    infl(*args, "-o", out, "--force", "-q")
    with h5py.File(out, "r") as f:
        return {k: f[k][:] for k in ("topk/index", "topk/score", "bottomk/index", "bottomk/score", "self") if k in f}


def assert_same(a, b, rtol=1e-4):
    assert a.keys() == b.keys()
    for k in a:
        if k.endswith("index"):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            scale = np.abs(a[k]).max()
            np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=rtol * scale, err_msg=k)


def both(case, cmd, method, extra_run=(), extra_cap=(), top=4):
    c, data = case["cap"], case["data"]
    q = () if cmd == "self" else ("--top", top)
    run_args = [cmd, "--run", case["run"], "--train", data + ":/train", "--method", method, *q, *extra_run]
    cap_args = [cmd, "--run", c, "--train", c + ":/train", "--method", method, *q, *extra_cap]
    if cmd == "rank":
        run_args += ["--query", data + ":/test"]
        cap_args += ["--query", c + ":/test"]
    return scores(case, "r-%s-%s.h5" % (cmd, method), *run_args), scores(case, "c-%s-%s.h5" % (cmd, method), *cap_args)


@pytest.mark.parametrize("method", ["tracin", "graddot", "gradcos"])
def test_cli_rank_captured_equals_run(mlp_case, method):
    assert_same(*both(mlp_case, "rank", method))


@pytest.mark.parametrize("method", ["tracin", "graddot"])
def test_cli_self_captured_equals_run(mlp_case, method):
    assert_same(*both(mlp_case, "self", method))


@pytest.mark.parametrize("strategy", ["ekfac", "kfac"])
def test_cli_fit_rank_captured_equals_run(mlp_case, strategy):
    c, d = mlp_case["cap"], mlp_case["dir"]
    fr, fc = str(d / ("fr-%s.h5" % strategy)), str(d / ("fc-%s.h5" % strategy))
    infl("fit", "--run", mlp_case["run"], "--data", mlp_case["data"] + ":/train", "--strategy", strategy,
         "--fisher", "empirical", "-o", fr, "--force", "-q")
    infl("fit", "--run", c, "--data", c + ":/train", "--strategy", strategy, "--fisher", "empirical", "-o", fc,
         "--force", "-q")
    assert_same(*both(mlp_case, "rank", strategy, ("--factors", fr), ("--factors", fc)))
    assert_same(*both(mlp_case, "self", strategy, ("--factors", fr), ("--factors", fc)))


def test_python_ekfac_on_a_capture_equals_the_cli(mlp_case):
    """From Python (infl.Context over libinfl.so): EK-FAC factors fitted on the captured file
    rank its queries as `infl rank` does, and as the run itself ranks them."""
    import infl as api
    c, d = mlp_case["cap"], mlp_case["dir"]
    fc = str(d / "py-fc.h5")
    with api.Context(backend="cpu") as ctx:
        ctx.fit(run=c, out=fc, fisher="empirical", force=True)
        r = ctx.rank(run=c, query=c + ":/test", method="ekfac", factors=fc, top=4)
    cli = scores(mlp_case, "py-cli.h5", "rank", "--run", c, "--query", c + ":/test", "--method", "ekfac",
                 "--factors", fc, "--top", 4)
    np.testing.assert_array_equal(r.proponents, cli["topk/index"])
    np.testing.assert_array_equal(r.opponents, cli["bottomk/index"])
    np.testing.assert_allclose(r.proponent_scores, cli["topk/score"], rtol=1e-6)
    with pytest.raises(api.InflError) as e:
        with api.Context(backend="cpu") as ctx:
            ctx.fit(run=c, out=str(d / "py-true.h5"), force=True)  # the true Fisher: no Ds captured
    assert e.value.status == "INFL_E_UNSUPPORTED" and "--fisher empirical" in e.value.detail
