"""_api.py — the Python face of libinfl: a Context that runs rank, self-influence, fit,
index, train, eval and import, returning NumPy arrays and plain dicts, and raising
InflError (with the status name and the library's detail) when a call fails.

Options are those of the C structs of include/infl.h, by their C field names (see the
header's comments for each one's meaning and default); the keyword arguments spelled out
in each method's signature are the common ones, with enum values by name
(``method="ekfac"``, ``activation="tanh"``).
"""
import ctypes
import os
import tempfile
import threading

import numpy as np

from . import _cdefs as C
from ._lib import InflError, arg_error, enum_value, error, lib

__all__ = ["Context", "RankResult", "SelfResult", "version", "build_info", "info", "status_name"]


def version():
    """The version of the libinfl actually loaded, e.g. "0.1.0"."""
    return lib().infl_version_string().decode()


def build_info():
    """What the loaded libinfl was built with (compiler, BLAS, OpenMP, HDF5, backends)."""
    return lib().infl_build_info().decode()


def status_name(code):
    """The name of a status code, e.g. status_name(-4) == "INFL_E_FORMAT"."""
    return lib().infl_status_name(code).decode()


def info(path):
    """A human-readable description of an infl file (what `infl info FILE` prints)."""
    with Context(backend="cpu") as ctx:
        return ctx.info(path)


def _bytes(s, what):
    if s is None:
        return None
    if isinstance(s, os.PathLike):
        s = os.fspath(s)
    if isinstance(s, bytes):
        return s
    if not isinstance(s, str):
        raise TypeError(f"{what}: expected a str or path, got {type(s).__name__}")
    return s.encode()


def _int_array(value, what):
    """A C-contiguous int64 1-D copy of `value` (a sequence or array of integers),
    checked before any C call: TypeError for a non-integer dtype, ValueError for another
    shape or a negative entry."""
    a = np.asarray(value)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.integer) and np.can_cast(a.dtype, np.int64)):
        raise TypeError(f"{what}: expected integers (int64 or a narrower integer type), got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D array of row numbers, got shape {a.shape}")
    if a.size and a.min() < 0:
        raise ValueError(f"{what}: row numbers must be >= 0, got {int(a.min())}")
    return np.ascontiguousarray(a, dtype=np.int64)


def _strings(values, what):
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{what}: expected a list of strings, got a single string")
    arr = (ctypes.c_char_p * len(values))()
    for i, v in enumerate(values):
        arr[i] = None if v is None else _bytes(v, f"{what}[{i}]")
    return arr


def _copy(ptr, shape, dtype):
    """A NumPy copy of `shape` elements at a ctypes pointer (None when NULL)."""
    if not ptr:
        return None
    n = int(np.prod(shape))
    if n == 0:
        return np.zeros(shape, dtype=dtype)
    return np.ctypeslib.as_array(ptr, shape=(n,)).astype(dtype, copy=True).reshape(shape)


def _scalars(s):
    """The scalar fields of a ctypes struct as a dict."""
    out = {}
    for name, t in s._fields_:
        if t in (ctypes.c_int, ctypes.c_int32, ctypes.c_int64, ctypes.c_uint64, ctypes.c_double, ctypes.c_float):
            out[name] = getattr(s, name)
    return out


def _set_fields(st, options, call, enums=None):
    """Sets fields of the C struct `st` from keyword `options` (C field names): strings
    are encoded, enum fields (`enums`: field -> C enum) take names; pointer fields have
    their own keyword arguments and are refused here."""
    enums = enums or {}
    fields = dict(st._fields_)
    for name, value in options.items():
        if name not in fields:
            raise TypeError(f"{call}: unknown option {name!r} (the options are the fields of "
                            f"{type(st).__name__} in include/infl.h)")
        t = fields[name]
        if name in enums:
            setattr(st, name, enum_value(enums[name], value, f"{call}: {name}"))
        elif t is ctypes.c_char_p:
            setattr(st, name, _bytes(value, f"{call}: {name}"))
        elif t is ctypes.c_char:
            setattr(st, name, _bytes(value, f"{call}: {name}"))
        elif t in (ctypes.c_double, ctypes.c_float):
            if not isinstance(value, (int, float, np.number)) or isinstance(value, bool):
                raise TypeError(f"{call}: {name}: expected a number, got {type(value).__name__}")
            setattr(st, name, float(value))
        elif t in (ctypes.c_int, ctypes.c_int32, ctypes.c_int64, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_uint):
            if not isinstance(value, (int, np.integer)):
                raise TypeError(f"{call}: {name}: expected an integer, got {type(value).__name__}")
            setattr(st, name, int(value))
        else:
            raise TypeError(f"{call}: {name} is not settable this way")


class RankResult:
    """What Context.rank returns: for M queries and k entries per side,

    - ``proponents`` int64 [M, k]: training rows, highest score first;
      ``proponent_scores`` float32 [M, k];
    - ``opponents`` int64 [M, k]: lowest score first; ``opponent_scores`` float32 [M, k];
    - ``query_label``, ``query_pred`` int32 [M] (-1 where none), ``query_loss`` float64 [M];
    - ``scores`` float32 [M, N] when asked for (``scores=True``), else None;
    - ``query_begin``, ``n_train`` (N), ``checkpoints``, ``method``;
    - ``query_prompt``, ``query_completion`` (lists of str; language models' text queries);
    - ``report``: the timings and counts of infl_rank_result (seconds_score, flops, ...).
    """

    def __repr__(self):
        return (f"RankResult(method={self.method!r}, queries={self.proponents.shape[0]}, "
                f"k={self.proponents.shape[1]}, n_train={self.n_train})")


class SelfResult:
    """What Context.self_influence returns: ``scores`` float32 [N] (each training row's
    self-influence), ``order`` int64 [N] (rows by decreasing self-influence), and where the
    train split records flipped labels ``flipped`` (how many) and ``recall`` float64 [3]
    (the share of them in the top 5%, 10%, 20%); ``seconds``."""

    def __repr__(self):
        return f"SelfResult(n={self.scores.shape[0]})"


_RANK_ENUMS = {"method": "infl_method"}
_SOLVERS = {"direct": 0, "cg": 1, "lissa": 2}
_HESSIANS = {"exact": 0, "ggn": 1}
_REPRESENTER_CLASSES = {"predicted": 0, "true": 1, "loss": 2}


class Context:
    """A libinfl context: the backend, the thread count, the last error's detail.

    ``Context(backend="auto", threads=0, deterministic=None, progress=None)``: backend
    "auto" | "cpu" | "cuda" | "cuda:N" (None: $INFL_BACKEND, else auto); threads 0 = the
    runtime's default; deterministic True/False (None: $INFL_DETERMINISTIC, else False);
    progress an optional ``callable(what, done, total, info)`` called during long work.

    A libinfl context is not thread-safe: this object serialises its own calls with a lock,
    so for parallel work use one Context per thread (and note that the serial HDF5 build
    must not read files from two contexts at once). Ctrl-C (or an exception raised by the
    progress callable) stops the running call at its next progress report: it leaves no
    output under the final name and the exception propagates. Use it as a context manager
    or call close(); the C context is freed then, or when the object is collected.
    """

    def __init__(self, backend="auto", threads=0, deterministic=None, progress=None):
        L = lib()
        self._lib = L
        self._lock = threading.Lock()
        self._ctx = ctypes.c_void_p()
        opts = L.infl_ctx_options_default()
        opts.backend = _bytes(backend, "backend")
        if not isinstance(threads, int) or threads < 0:
            raise ValueError(f"threads: expected an integer >= 0, got {threads!r}")
        opts.threads = threads
        opts.deterministic = -1 if deterministic is None else int(bool(deterministic))
        st = L.infl_ctx_create(ctypes.byref(opts), ctypes.byref(self._ctx))
        if st != 0:
            detail = L.infl_ctx_error(self._ctx).decode(errors="replace")
            L.infl_ctx_free(self._ctx)
            self._ctx = None
            raise error(st, detail)
        self.progress = progress
        self._cancel = ctypes.c_int(0)
        self._pending = None  # an exception raised inside the progress trampoline
        self._trampoline = C.infl_progress_fn(self._on_progress)
        L.infl_ctx_set_progress(self._ctx, self._trampoline, None)
        L.infl_ctx_set_cancel(self._ctx, ctypes.byref(self._cancel))

    # ---- lifetime ----
    def close(self):
        """Frees the C context (later calls raise ValueError). Idempotent."""
        if getattr(self, "_ctx", None):
            self._lib.infl_ctx_free(self._ctx)
            self._ctx = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _handle(self):
        if not self._ctx:
            raise ValueError("this infl.Context is closed")
        return self._ctx

    # ---- what the context says ----
    @property
    def backend(self):
        """The backend this context runs on, e.g. "cpu (OpenBLAS 0.3.21, 2 threads)"."""
        return self._lib.infl_ctx_backend(self._handle()).decode()

    @property
    def backend_note(self):
        """What backend "auto" chose and why ("" when not asked for auto)."""
        return self._lib.infl_ctx_backend_note(self._handle()).decode()

    @property
    def notes(self):
        """What the library did on the caller's behalf (e.g. stale temporaries removed),
        one line each; cleared by each call."""
        return self._lib.infl_ctx_notes(self._handle()).decode()

    # ---- calling ----
    def _on_progress(self, _user, what, done, total, info):
        if self._pending is not None:
            return
        try:
            if self.progress is not None:
                self.progress(what.decode() if what else "", done, total, info.decode() if info else None)
        except BaseException as e:  # KeyboardInterrupt included: stop the C call, re-raise after it
            self._pending = e
            self._cancel.value = 1

    def _call(self, fn, *args):
        """Calls a libinfl function that takes the context first; raises on failure."""
        with self._lock:
            h = self._handle()
            self._lib.infl_ctx_clear_notes(h)
            self._cancel.value = 0
            self._pending = None
            st = fn(h, *args)
            pending, self._pending = self._pending, None
            if pending is not None:
                raise pending
            if st != 0:
                raise error(st, self._lib.infl_ctx_error(h).decode(errors="replace"))

    # ---- inspection ----
    def info(self, path):
        """A human-readable description of an infl file (as `infl info FILE` prints)."""
        libc = ctypes.CDLL(None)
        libc.open_memstream.restype = ctypes.c_void_p
        libc.open_memstream.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t)]
        libc.fclose.argtypes = [ctypes.c_void_p]
        libc.free.argtypes = [ctypes.c_void_p]
        buf, size = ctypes.c_void_p(), ctypes.c_size_t()
        f = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
        if not f:
            raise OSError(ctypes.get_errno(), "open_memstream failed")
        try:
            self._call(self._lib.infl_info, _bytes(path, "path"), f)
        finally:
            libc.fclose(f)
            text = ctypes.string_at(buf, size.value).decode(errors="replace") if buf else ""
            libc.free(buf)
        return text

    # ---- attribution ----
    def _rank_options(self, call, run, query, train, method, factors, top, checkpoint, checkpoints, damping,
                      hessian, solver, index, output, save_scores, force, query_rows, prompts, completions,
                      options, keep):
        o = self._lib.infl_rank_options_default()
        m = enum_value("infl_method", method, f"{call}: method")
        o.method = m
        for name, value in (("run", run), ("query", query), ("train", train), ("factors", factors),
                            ("checkpoint", checkpoint), ("checkpoints", checkpoints), ("index", index),
                            ("output", output)):
            setattr(o, name, _bytes(value, f"{call}: {name}"))
        if not isinstance(top, int) or top < 1:
            raise ValueError(f"{call}: top: expected an integer >= 1, got {top!r}")
        o.top = top
        o.save_scores = int(bool(save_scores))
        o.force = int(bool(force))
        ek = C.ENUMS["infl_method"][m][0] in ("INFL_METHOD_EKFAC", "INFL_METHOD_KFAC", "INFL_METHOD_DIAGONAL")
        ix = bool(index) and C.ENUMS["infl_method"][m][0] in ("INFL_METHOD_TRAK", "INFL_METHOD_IF")
        o.damping_auto = int(ek or ix)  # as the CLI: auto unless a value is given
        if isinstance(damping, str) and damping.startswith("auto"):
            if not (ek or ix):
                raise arg_error(f"{call}: damping 'auto' goes with method ekfac, kfac, diagonal, or trak and if "
                                "with an index")
            if damping.startswith("auto:"):
                o.damping_factor = float(damping[5:])
        elif damping is not None:
            if not isinstance(damping, (int, float)) or isinstance(damping, bool) or not damping >= 0:
                raise ValueError(f"{call}: damping: expected 'auto', 'auto:F' or a number >= 0, got {damping!r}")
            o.damping, o.damping_auto = float(damping), 0
        for name, value, table in (("hessian", hessian, _HESSIANS), ("solver", solver, _SOLVERS)):
            if value is not None:
                if value not in table:
                    raise arg_error(f"{call}: {name}: expected one of {', '.join(table)}, got {value!r}")
                setattr(o, name, table[value])
        rc = options.pop("representer_class", None)
        if rc is not None:
            o.representer_class = _REPRESENTER_CLASSES[rc] if rc in _REPRESENTER_CLASSES else rc
        if query_rows is not None:
            rows = _int_array(query_rows, f"{call}: query_rows")
            keep.append(rows)
            o.query_rows = rows.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))
            o.nquery_rows = len(rows)
        if prompts is not None:
            p = _strings(prompts, f"{call}: prompts")
            keep.append(p)
            o.prompt, o.ntext = p, len(p)
            if completions is not None:
                if len(completions) != len(prompts):
                    raise ValueError(f"{call}: {len(completions)} completions for {len(prompts)} prompts")
                c = _strings(completions, f"{call}: completions")
                keep.append(c)
                o.completion = c
        elif completions is not None:
            raise ValueError(f"{call}: completions without prompts")
        _set_fields(o, options, call, _RANK_ENUMS)
        return o

    def rank(self, run=None, query=None, *, train=None, method="tracin", factors=None, top=10, checkpoint=None,
             checkpoints=None, damping=None, hessian=None, solver=None, index=None, output=None,
             save_scores=False, scores=False, force=False, query_rows=None, prompts=None, completions=None,
             **options):
        """Ranks the training examples by their influence on each query (infl_rank).

        run: the run file; query: a data reference such as "f.h5:/test[0:8]" (or, for a
        GPT run, ``prompts`` and optional ``completions``: lists of str); train: the
        training data (None: the run's own); method: "tracin" (default), "graddot",
        "gradcos", "if", "ekfac", "kfac", "diagonal", "representer", "sgd-influence",
        "trak"; factors: the factors file (ekfac, kfac, diagonal); top: k per side;
        checkpoint (graddot, gradcos, if) / checkpoints (tracin: "all" or a list); damping:
        None or "auto" (ekfac, kfac, diagonal, index kernels: 0.1 x mean eigenvalue, as the
        CLI), "auto:F", or a value; hessian "exact"|"ggn", solver "direct"|"cg"|"lissa" (if);
        index: gradient index file(s), comma-separated; query_rows: an integer array of rows
        within the query's range (checked: int dtype, 1-D); output: a scores file to write
        (save_scores: with the full matrix); scores=True also returns the full [M, N] matrix
        (read back with h5py). Any other field of infl_rank_options by its C name
        (shard_mb=16, cg_iters=50, query_rank=8, ...).

        Returns a RankResult. Raises InflError (InflArgError, InflIoError, ...) on failure.
        """
        keep = []
        tmpdir = None
        if scores and not output:
            tmpdir = tempfile.TemporaryDirectory(prefix="infl-rank-")
            output = os.path.join(tmpdir.name, "scores.h5")
        try:
            o = self._rank_options("rank", run, query, train, method, factors, top, checkpoint, checkpoints,
                                   damping, hessian, solver, index, output, save_scores or scores, force,
                                   query_rows, prompts, completions, options, keep)
            res = ctypes.POINTER(C.infl_rank_result)()
            self._call(self._lib.infl_rank, ctypes.byref(o), ctypes.byref(res))
            try:
                out = self._rank_result(res.contents)
            finally:
                self._lib.infl_rank_result_free(res)
            out.method = self._lib.infl_method_name(o.method).decode()
            out.scores = None
            if scores:
                import h5py  # only for the full matrix
                with h5py.File(output, "r") as f:
                    out.scores = f["scores"][...]
            return out
        finally:
            if tmpdir is not None:
                tmpdir.cleanup()

    @staticmethod
    def _rank_result(r):
        out = RankResult()
        M, k = r.M, r.k
        out.proponents = _copy(r.top_index, (M, k), np.int64)
        out.proponent_scores = _copy(r.top_score, (M, k), np.float32)
        out.opponents = _copy(r.bottom_index, (M, k), np.int64)
        out.opponent_scores = _copy(r.bottom_score, (M, k), np.float32)
        out.query_label = _copy(r.query_label, (M,), np.int32)
        out.query_pred = _copy(r.query_pred, (M,), np.int32)
        out.query_loss = _copy(r.query_loss, (M,), np.float64)
        out.query_begin, out.n_train, out.checkpoints = r.query_begin, r.N, r.checkpoints
        out.query_prompt = [r.query_prompt[i].decode(errors="replace") for i in range(M)] if r.query_prompt else None
        out.query_completion = ([r.query_completion[i].decode(errors="replace") for i in range(M)]
                                if r.query_completion else None)
        out.report = {n: v for n, v in _scalars(r).items() if n not in ("M", "k", "N", "query_begin")}
        return out

    def self_influence(self, run=None, *, train=None, method="tracin", factors=None, checkpoint=None,
                       checkpoints=None, damping=None, hessian=None, solver=None, index=None, output=None,
                       force=False, **options):
        """Self-influence of every training example (infl_self): tracin, graddot, if (with
        solver="direct"), ekfac/kfac/diagonal (with factors), representer, trak (with index).
        Options as for rank (C field names of infl_rank_options for the rest); output: write
        /self and /self_order to an HDF5 file. Returns a SelfResult (``scores`` float32 [N],
        ``order`` int64 [N], ``flipped``, ``recall``). Raises InflError on failure."""
        keep = []
        o = self._rank_options("self_influence", run, None, train, method, factors, 10, checkpoint, checkpoints,
                               damping, hessian, solver, index, output, False, force, None, None, None,
                               options, keep)
        res = ctypes.POINTER(C.infl_self_result)()
        self._call(self._lib.infl_self, ctypes.byref(o), ctypes.byref(res))
        try:
            r = res.contents
            out = SelfResult()
            out.scores = _copy(r.self, (r.N,), np.float32)
            out.order = _copy(r.order, (r.N,), np.int64)
            out.flipped = r.flipped if r.has_flipped else None
            out.recall = np.array(r.recall[:], dtype=np.float64) if r.has_flipped else None
            out.seconds = r.seconds
        finally:
            self._lib.infl_self_result_free(res)
        return out

    def fit(self, run, out, *, checkpoint=None, data=None, strategy="ekfac", fisher="true", force=False, **options):
        """Fits EK-FAC (strategy "ekfac"; or "kfac", "diagonal", "identity") factors of a
        checkpoint over the training split and writes a factors file `out` (infl_fit).
        fisher: "true" (labels sampled from the model) or "empirical". Other fields of
        infl_fit_options by their C names (seed, samples, shard_mb). Returns the report
        (a dict: examples, seconds_cov, seconds_eig, ...). Raises InflError on failure."""
        o = self._lib.infl_fit_options_default()
        o.run, o.checkpoint, o.data = _bytes(run, "fit: run"), _bytes(checkpoint, "fit: checkpoint"), \
            _bytes(data, "fit: data")
        o.strategy = enum_value("infl_strategy", strategy, "fit: strategy")
        if fisher not in ("true", "empirical"):
            raise arg_error(f"fit: fisher: expected true or empirical, got {fisher!r}")
        o.fisher_empirical = int(fisher == "empirical")
        o.force = int(bool(force))
        _set_fields(o, options, "fit")
        rep = C.infl_fit_report()
        self._call(self._lib.infl_fit, ctypes.byref(o), _bytes(out, "fit: out"), ctypes.byref(rep))
        return _scalars(rep)

    def index(self, run, out, *, train=None, checkpoints=None, projection="rademacher", dim=None, kron=None,
              float16=True, force=False, **options):
        """Writes a gradient index `out` (infl_index): every training example's projected
        gradient at every checkpoint. projection "rademacher" | "gaussian" (dim: k) |
        "kron" (kron=(k_out, k_in) per layer); float16 rows by default. Other fields of
        infl_index_options by their C names (seed, shard_mb). Resumes from out.partial.
        Returns the report as a dict (N, k, checkpoints, seconds, ...)."""
        o = self._lib.infl_index_options_default()
        o.run, o.train, o.checkpoints = (_bytes(run, "index: run"), _bytes(train, "index: train"),
                                         _bytes(checkpoints, "index: checkpoints"))
        o.projection = enum_value("infl_projection", projection, "index: projection")
        if dim is not None:
            o.dim = dim
        if kron is not None:
            o.kron_out, o.kron_in = kron
        o.float16, o.force = int(bool(float16)), int(bool(force))
        _set_fields(o, options, "index")
        rep = C.infl_index_report()
        self._call(self._lib.infl_index, ctypes.byref(o), _bytes(out, "index: out"), ctypes.byref(rep))
        return _scalars(rep)

    def compare(self, a, b, k=10):
        """How two scores files with full matrices (rank(..., save_scores=True, output=...))
        agree, query by query (infl_compare): a dict with NumPy float64 arrays [M] 'pearson',
        'spearman', 'top_overlap', 'bottom_overlap' (share of the k proponents/opponents in
        common), their means, and 'method_a', 'method_b'."""
        res = ctypes.POINTER(C.infl_compare_result)()
        self._call(self._lib.infl_compare, _bytes(a, "compare: a"), _bytes(b, "compare: b"), int(k),
                   ctypes.byref(res))
        try:
            r = res.contents
            out = {name: _copy(getattr(r, name), (r.M,), np.float64)
                   for name in ("pearson", "spearman", "top_overlap", "bottom_overlap")}
            out.update(M=r.M, N=r.N, k=r.k, mean_pearson=r.mean_pearson, mean_spearman=r.mean_spearman,
                       mean_top=r.mean_top, mean_bottom=r.mean_bottom, method_a=r.method_a.decode(),
                       method_b=r.method_b.decode())
        finally:
            self._lib.infl_compare_result_free(res)
        return out

    # ---- data and models ----
    def generate(self, run, prompt="", *, tokens=200, temperature=0.8, top_k=40, seed=0, checkpoint=None):
        """A GPT run's seeded completion of `prompt` (infl_generate): a dict with 'completion'
        (str; bytes that are not UTF-8, e.g. cut inside a character, are replaced), 'bytes'
        (the completion as generated), 'prompt_tokens', 'tokens' (generated) and 'ended' (the
        model ended the document).
        temperature 0 is greedy."""
        o = self._lib.infl_generate_options_default()
        o.run, o.checkpoint = _bytes(run, "generate: run"), _bytes(checkpoint, "generate: checkpoint")
        o.prompt = _bytes(prompt, "generate: prompt")
        o.tokens, o.temperature, o.top_k, o.seed = int(tokens), float(temperature), int(top_k), int(seed)
        res = ctypes.POINTER(C.infl_generate_result)()
        self._call(self._lib.infl_generate, ctypes.byref(o), ctypes.byref(res))
        try:
            r = res.contents
            raw = ctypes.string_at(r.completion, r.length)
            return {"completion": raw.decode("utf-8", errors="replace"), "bytes": raw,
                    "prompt_tokens": r.prompt_tokens, "tokens": r.tokens, "ended": bool(r.ended)}
        finally:
            self._lib.infl_generate_result_free(res)

    def import_fashion_mnist(self, out, *, dir=None, limit=0, pool=1, flip_labels=0.0, seed=0, force=False):
        """Imports Debian's Fashion-MNIST IDX files (dir: default
        /usr/share/datasets/fashion-mnist) into a dataset file `out` (infl_import_fashion_mnist):
        the first `limit` rows of each split (0: all), average-pooled by `pool` (1, 2, 4),
        `flip_labels` of the training labels flipped (seeded)."""
        o = self._lib.infl_import_fmnist_options_default()
        if dir is not None:
            o.dir = _bytes(dir, "import_fashion_mnist: dir")
        _set_fields(o, {"limit": limit, "pool": pool, "flip_labels": flip_labels, "seed": seed,
                        "force": int(bool(force))}, "import_fashion_mnist")
        self._call(self._lib.infl_import_fashion_mnist, ctypes.byref(o), _bytes(out, "import: out"))

    def train(self, data, out, *, model="mlp", layers=None, exclude=None, force=False, **options):
        """Trains a model on a data reference ("f.h5:/train") and writes a run file `out`
        with its checkpoints (infl_train). model "mlp": layers = the widths [d0, d1, ..., dL]
        (one weight layer: a convex model trained by Newton); model "gpt": layers = blocks.
        exclude: training rows left out (integer array, ascending). Other fields of
        infl_train_options by their C names, enums by name (activation="tanh",
        loss="softmax_ce", schedule="cosine", epochs=5, batch=128, lr=0.1, seed=1,
        checkpoint_every=500, ...). Returns the report as a dict."""
        kind = enum_value("infl_model_kind", model, "train: model")
        gpt = C.ENUMS["infl_model_kind"][kind][0] == "INFL_MODEL_GPT"
        o = self._lib.infl_train_options_gpt_default() if gpt else self._lib.infl_train_options_default()
        o.data = _bytes(data, "train: data")
        o.model = kind
        keep = []
        if layers is not None:
            if gpt:
                o.nlayers = int(layers)
            else:
                widths = list(layers)
                if not 2 <= len(widths) <= C.INFL_MAX_LAYERS + 1:
                    raise ValueError(f"train: layers: expected 2 to {C.INFL_MAX_LAYERS + 1} widths, got {len(widths)}")
                o.nlayers = len(widths) - 1
                for i, w in enumerate(widths):
                    o.widths[i] = int(w)
        if exclude is not None:
            rows = _int_array(exclude, "train: exclude")
            keep.append(rows)
            o.exclude, o.nexclude = rows.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)), len(rows)
        o.force = int(bool(force))
        _set_fields(o, options, "train", {"activation": "infl_activation", "loss": "infl_loss",
                                          "optimizer": "infl_optimizer", "schedule": "infl_schedule"})
        rep = C.infl_train_report()
        self._call(self._lib.infl_train, ctypes.byref(o), _bytes(out, "train: out"), ctypes.byref(rep))
        return _scalars(rep)

    def eval(self, run, data, checkpoint=None):
        """Evaluates a checkpoint (None: the last) of a run on a data reference (infl_eval):
        a dict with n, loss, accuracy (NaN for mse and GPTs), tokens, perplexity."""
        res = C.infl_eval_result()
        self._call(self._lib.infl_eval, _bytes(run, "eval: run"), _bytes(checkpoint, "eval: checkpoint"),
                   _bytes(data, "eval: data"), ctypes.byref(res))
        return _scalars(res)


# InflError is re-exported by the package; keep the name referenced for linters
_ = InflError
