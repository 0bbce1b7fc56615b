"""test_rank.py — the Python package's results against the CLI's files for the same run:
rank (tracin, graddot, if, ekfac; top-k indices exactly, scores to 1e-6; the full score
matrix), self-influence, fit (factors that rank the same) and index (the same rows)."""
import h5py
import numpy as np
import pytest

import infl
from conftest import cli

METHODS = [("tracin", []), ("graddot", []), ("if", ["--solver", "direct", "--hessian", "ggn"]), ("ekfac", None)]


@pytest.mark.parametrize("method,extra", METHODS, ids=[m for m, _ in METHODS])
def test_rank_matches_cli(ctx, tiny, method, extra):
    out = tiny["dir"] / f"cli-{method}.h5"
    kw = {}
    if method == "ekfac":
        extra = ["--factors", tiny["factors"]]
        kw["factors"] = tiny["factors"]
    if method == "if":
        kw.update(solver="direct", hessian="ggn")
    cli("rank", "--run", tiny["run"], "--query", tiny["query"], "--method", method, "--top", 5, "-o", out,
        "--save-scores", "--force", *extra)
    r = ctx.rank(run=tiny["run"], query=tiny["query"], method=method, top=5, scores=True, **kw)
    assert r.method == method
    assert r.proponents.dtype == np.int64 and r.proponents.shape == (6, 5)
    assert r.proponent_scores.dtype == np.float32 and r.opponent_scores.shape == (6, 5)
    assert r.n_train == 120 and r.query_begin == 0
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(r.proponents, f["topk/index"][...])
        np.testing.assert_array_equal(r.opponents, f["bottomk/index"][...])
        np.testing.assert_allclose(r.proponent_scores, f["topk/score"][...], rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(r.opponent_scores, f["bottomk/score"][...], rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(r.scores, f["scores"][...], rtol=1e-6, atol=1e-12)
    # the top-k is the full matrix's
    assert r.scores.shape == (6, 120)
    np.testing.assert_array_equal(np.sort(r.scores, axis=1)[:, ::-1][:, :5], r.proponent_scores)


def test_rank_query_rows(ctx, tiny):
    full = ctx.rank(run=tiny["run"], query=tiny["query"], method="graddot", top=4)
    sub = ctx.rank(run=tiny["run"], query=tiny["query"], method="graddot", top=4, query_rows=np.array([4, 1]))
    np.testing.assert_array_equal(sub.proponents, full.proponents[[4, 1]])
    np.testing.assert_array_equal(sub.opponent_scores, full.opponent_scores[[4, 1]])


def test_self_matches_cli(ctx, tiny):
    out = tiny["dir"] / "cli-self.h5"
    cli("self", "--run", tiny["run"], "--method", "tracin", "-o", out, "--force")
    s = ctx.self_influence(run=tiny["run"], method="tracin")
    assert s.scores.dtype == np.float32 and s.scores.shape == (120,)
    with h5py.File(out, "r") as f:
        np.testing.assert_allclose(s.scores, f["self"][...], rtol=1e-6, atol=1e-12)
        np.testing.assert_array_equal(s.order, f["self_order"][...])
    assert s.flipped is None


def test_fit_from_python_ranks_as_the_cli_factors(ctx, tiny, tmp_path):
    rep = ctx.fit(run=tiny["run"], out=tmp_path / "f.h5")
    assert rep["examples"] == 120
    with h5py.File(tmp_path / "f.h5", "r") as a, h5py.File(tiny["factors"], "r") as b:
        for name in ("A_vals", "S_vals", "lambda"):
            np.testing.assert_allclose(a[f"layer0/{name}"][...], b[f"layer0/{name}"][...], rtol=1e-6, atol=1e-12)
    ra = ctx.rank(run=tiny["run"], query=tiny["query"], method="ekfac", factors=str(tmp_path / "f.h5"), top=5)
    rb = ctx.rank(run=tiny["run"], query=tiny["query"], method="ekfac", factors=tiny["factors"], top=5)
    np.testing.assert_array_equal(ra.proponents, rb.proponents)


def test_index_matches_cli(ctx, tiny, tmp_path):
    cli("index", "--run", tiny["run"], "--dim", 16, "-o", tmp_path / "cli.h5")
    rep = ctx.index(run=tiny["run"], out=tmp_path / "py.h5", dim=16)
    assert rep["N"] == 120 and rep["k"] == 16
    with h5py.File(tmp_path / "cli.h5", "r") as a, h5py.File(tmp_path / "py.h5", "r") as b:
        names = list(a["checkpoints"])
        assert names == list(b["checkpoints"]) and len(names) == rep["checkpoints"]
        for n in names:
            np.testing.assert_array_equal(a[f"checkpoints/{n}/phi"][...], b[f"checkpoints/{n}/phi"][...])
    r = ctx.rank(run=tiny["run"], query=tiny["query"], method="trak", index=str(tmp_path / "py.h5"), top=3)
    assert r.proponents.shape == (6, 3)


def test_train_eval_from_python(ctx, tiny, tmp_path):
    run = tmp_path / "run.h5"
    rep = ctx.train(f"{tiny['data']}:/train", run, layers=[12, 10, 4], epochs=3, batch=16, lr=0.1,
                    checkpoint_every=8, seed=1)
    assert rep["steps"] == 3 * -(-120 // 16) and rep["checkpoints"] >= 3
    ev = ctx.eval(run, f"{tiny['data']}:/test")
    ev_cli = ctx.eval(tiny["run"], f"{tiny['data']}:/test")
    assert ev["n"] == 16 and ev["loss"] == pytest.approx(ev_cli["loss"], rel=1e-6)
    assert "format        run" in infl.info(run)
