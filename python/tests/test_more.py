"""test_more.py — the Python package's generate and compare against the CLI: a tiny GPT's
greedy completion equals `infl generate`'s, and compare's per-query statistics equal
`infl compare --per-query`'s for two scores files of the tiny MLP run."""
import re
import subprocess

import numpy as np
import pytest

import infl
from conftest import CLI, cli


@pytest.fixture(scope="module")
def gpt(tmp_path_factory):
    """A GPT of one block trained for an epoch on 60 short lines (bytes tokenizer)."""
    d = tmp_path_factory.mktemp("gpt")
    txt, data, run = d / "lines.txt", d / "docs.h5", d / "gpt.h5"
    words = ["the cat sat", "on the mat", "a dog ran far", "tea is hot", "it is late"]
    txt.write_text("".join(f"{words[i % 5]} {words[(3 * i) % 5]}\n" for i in range(60)))
    cli("import", "text", txt, "--sep", "line", "-o", data)
    cli("train", "--model", "gpt", "--data", f"{data}:/train", "--layers", 1, "--heads", 2, "--dim", 16,
        "--context", 32, "--epochs", 2, "--batch", 8, "--seed", 1, "-o", run)
    return str(run)


def test_generate_matches_cli(ctx, gpt):
    # the CLI prints the prompt and the completion's bytes (which need not be UTF-8)
    out = subprocess.run([CLI, "generate", "--run", gpt, "--prompt", "the cat", "--tokens", "12", "--temperature",
                          "0", "--seed", "3", "--threads", "1", "--deterministic", "1", "--quiet"],
                         capture_output=True, check=True).stdout
    g = ctx.generate(gpt, "the cat", tokens=12, temperature=0, seed=3)
    assert set(g) == {"completion", "bytes", "prompt_tokens", "tokens", "ended"}
    assert g["prompt_tokens"] == len("the cat")  # bytes tokenizer: a token per byte
    assert 0 < g["tokens"] <= 12 and isinstance(g["ended"], bool)
    assert g["bytes"] and g["bytes"] in out, (g, out)
    assert g["completion"] == g["bytes"].decode("utf-8", errors="replace")
    # sampling is seeded: the same seed, the same text
    a = ctx.generate(gpt, "a dog", tokens=10, temperature=1.0, top_k=5, seed=7)
    b = ctx.generate(gpt, "a dog", tokens=10, temperature=1.0, top_k=5, seed=7)
    assert a == b


def test_generate_refuses_an_mlp_run(ctx, tiny):
    with pytest.raises(infl.InflError) as e:
        ctx.generate(tiny["run"], "hello")
    assert e.value.status == "INFL_E_ARG" and "gpt" in e.value.detail


def test_compare_matches_cli(ctx, tiny, tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    ctx.rank(run=tiny["run"], query=tiny["query"], method="tracin", output=a, save_scores=True)
    ctx.rank(run=tiny["run"], query=tiny["query"], method="graddot", output=b, save_scores=True)
    c = ctx.compare(a, b, k=5)
    text = cli("compare", a, b, "-k", 5, "--per-query")
    rows = re.findall(r"query +(\d+) +pearson (\S+) +spearman (\S+) +top-5 (\S+) +bottom-5 (\S+)", text)
    ref = np.array([[float(x) for x in r[1:]] for r in rows])
    assert c["M"] == 6 and c["N"] == 120 and c["k"] == 5 and ref.shape == (6, 4), text
    assert (c["method_a"], c["method_b"]) == ("tracin", "graddot")
    assert c["pearson"].shape == (6,) and c["pearson"].dtype == np.float64
    got = np.stack([c["pearson"], c["spearman"], c["top_overlap"], c["bottom_overlap"]], axis=1)
    np.testing.assert_allclose(got, ref, atol=6e-5)  # the CLI prints 4 (overlaps 2) decimals
    np.testing.assert_allclose(c["mean_pearson"], c["pearson"].mean(), rtol=1e-12)
    assert np.all((c["top_overlap"] >= 0) & (c["top_overlap"] <= 1))
    with pytest.raises(infl.InflError):
        ctx.compare(a, tmp_path / "missing.h5")
