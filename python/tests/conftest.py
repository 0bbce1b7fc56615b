"""conftest.py — what the Python package's tests share: the infl CLI ($INFL_CLI, set by
run.sh; else build/infl), and one tiny synthetic dataset with an MLP run trained on it by
the CLI (made once per session), which the tests rank from Python and from the CLI."""
import os
import subprocess

import pytest

import infl  # noqa: F401  (before NumPy: see infl/_lib.py)

SRC = os.environ.get("INFL_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
CLI = os.environ.get("INFL_CLI", os.path.join(SRC, "build", "infl"))


def cli(*args):
    """Runs the infl CLI (one thread, deterministic GEMMs) and returns its stdout."""
    p = subprocess.run([CLI, *map(str, args), "--threads", "1", "--deterministic", "1", "--quiet"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError(f"infl {' '.join(map(str, args))}: exit {p.returncode}: {p.stderr}")
    return p.stdout


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A synthetic dataset (120 training rows of 12 features, 4 classes, 16 test rows), an
    MLP 12-10-4 trained on it with checkpoints, and its EK-FAC factors, all by the CLI."""
    d = tmp_path_factory.mktemp("tiny")
    data, run, factors = d / "syn.h5", d / "run.h5", d / "factors.h5"
    cli("synth", "-o", data, "--n", 120, "--d", 12, "--classes", 4, "--test", 16, "--seed", 3)
    cli("train", "--data", f"{data}:/train", "--layers", "12,10,4", "--epochs", 3, "--batch", 16, "--lr", 0.1,
        "--checkpoint-every", 8, "--seed", 1, "-o", run)
    cli("fit", "--run", run, "-o", factors)
    return {"dir": d, "data": str(data), "run": str(run), "factors": str(factors),
            "query": f"{data}:/test[0:6]"}


@pytest.fixture
def ctx():
    with infl.Context(backend="cpu", threads=1, deterministic=True) as c:
        yield c
