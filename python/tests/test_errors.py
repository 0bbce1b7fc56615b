"""test_errors.py — failures reach Python as exceptions that say what went wrong: a
library status as InflError (its name, code and the context's detail), bad arguments as
TypeError/ValueError raised before any C call; the library's absence as a clear error."""
import os
import subprocess
import sys

import numpy as np
import pytest

import infl


def test_missing_file_is_io_error(ctx, tmp_path):
    missing = tmp_path / "missing-run.h5"
    with pytest.raises(infl.InflError) as e:
        ctx.rank(run=missing, query=f"{missing}:/test[0:2]")
    assert e.value.status == "INFL_E_IO" and e.value.code == -3
    assert isinstance(e.value, infl.InflIoError)
    assert "missing-run.h5" in e.value.detail and "missing-run.h5" in str(e.value)
    assert e.value.status == infl.status_name(e.value.code)


def test_wrong_file_kind_is_format_error(ctx, tiny):
    with pytest.raises(infl.InflFormatError) as e:
        ctx.rank(run=tiny["data"], query=tiny["query"])  # a dataset, not a run
    assert e.value.status == "INFL_E_FORMAT" and "syn.h5" in e.value.detail


def test_wrong_method(ctx, tiny):
    with pytest.raises(infl.InflError) as e:
        ctx.rank(run=tiny["run"], query=tiny["query"], method="nonsense")
    assert e.value.status == "INFL_E_ARG" and isinstance(e.value, ValueError)
    assert "tracin" in e.value.detail and "nonsense" in e.value.detail
    # a method the library refuses for this setup: its detail comes through
    with pytest.raises(infl.InflError) as e:
        ctx.rank(run=tiny["run"], query=tiny["query"], method="ekfac")  # no factors
    assert e.value.status == "INFL_E_ARG" and e.value.detail


@pytest.mark.parametrize("rows,exc,words", [
    (np.array([0.0, 1.0]), TypeError, "dtype float64"),
    (np.array([[0, 1]]), ValueError, "1-D"),
    (np.array([-1]), ValueError, ">= 0"),
    (["a"], TypeError, "integers"),
])
def test_bad_arrays_raise_before_c(ctx, tiny, rows, exc, words):
    with pytest.raises(exc, match=words):
        ctx.rank(run=tiny["run"], query=tiny["query"], query_rows=rows)
    with pytest.raises(exc, match=words):
        ctx.train(f"{tiny['data']}:/train", tiny["dir"] / "never.h5", layers=[12, 4], exclude=rows)
    assert not (tiny["dir"] / "never.h5").exists()


def test_bad_options(ctx, tiny):
    with pytest.raises(TypeError, match="unknown option 'no_such_field'"):
        ctx.rank(run=tiny["run"], query=tiny["query"], no_such_field=1)
    with pytest.raises(TypeError, match="cg_iters: expected an integer"):
        ctx.rank(run=tiny["run"], query=tiny["query"], cg_iters="many")
    with pytest.raises(infl.InflArgError, match="activation"):
        ctx.train(f"{tiny['data']}:/train", tiny["dir"] / "never.h5", layers=[12, 4], activation="swish")


def test_existing_output_needs_force(ctx, tiny, tmp_path):
    out = tmp_path / "f.h5"
    out.write_bytes(b"keep")
    with pytest.raises(infl.InflError) as e:
        ctx.fit(run=tiny["run"], out=out)
    assert e.value.status == "INFL_E_EXISTS" and out.read_bytes() == b"keep"
    ctx.fit(run=tiny["run"], out=out, force=True)
    assert "factors" in ctx.info(out)


def test_closed_context(tiny):
    c = infl.Context(backend="cpu")
    c.close()
    c.close()
    with pytest.raises(ValueError, match="closed"):
        c.rank(run=tiny["run"], query=tiny["query"])


def test_bad_backend():
    with pytest.raises(infl.InflError) as e:
        infl.Context(backend="tpu")
    assert e.value.status in ("INFL_E_ARG", "INFL_E_BACKEND") and "tpu" in e.value.detail


def test_progress_exception_cancels_the_call(tiny, tmp_path):
    calls = []

    def stop(what, done, total, info):
        calls.append(what)
        raise KeyboardInterrupt

    with infl.Context(backend="cpu", threads=1, progress=stop) as c:
        with pytest.raises(KeyboardInterrupt):
            c.train(f"{tiny['data']}:/train", tmp_path / "r.h5", layers=[12, 10, 4], epochs=3, batch=16)
        assert calls and not (tmp_path / "r.h5").exists()
        c.progress = None  # the context works again afterwards
        c.train(f"{tiny['data']}:/train", tmp_path / "r.h5", layers=[12, 10, 4], epochs=1, batch=16)
    assert (tmp_path / "r.h5").exists()


def _python(code, **env):
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e)


def test_library_not_found_is_clear():
    p = _python("import infl\ntry:\n infl.version()\nexcept infl.LibraryNotFoundError as e:\n print('ERR', e)",
                INFL_LIBRARY="/nonexistent/libinfl.so")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("ERR") and "/nonexistent/libinfl.so" in p.stdout and "INFL_LIBRARY" in p.stdout


def test_import_pulls_neither_torch_nor_h5py():
    p = _python("import sys, infl; print(sorted(m for m in ('torch', 'h5py') if m in sys.modules))")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_version_and_backend(ctx):
    assert infl.version() == "0.1.0" == infl.__version__
    assert ctx.backend.startswith("cpu")
    assert "OpenMP" in infl.build_info() or infl.build_info()
