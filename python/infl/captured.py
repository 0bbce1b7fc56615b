"""infl.captured — the `captured` HDF5 file (format version 1) written from NumPy arrays.

A captured file holds, for every checkpoint of a model and every example of a split, each
linear layer's inputs A and output gradients D (one row per token), so that infl ranks,
fits and self-scores any model without knowing its architecture (the format:
/work/helpers/CAPTURED.md, README "PyTorch"). This module has

- CapturedWriter: streams A/D rows batch by batch (memory bounded by a batch) into a
  temporary file renamed on close(); checks every shape, dtype and value on the way in.
- a NumPy reference of infl's MLP (forward and backward of relu/tanh/gelu layers and the
  softmax_ce/sigmoid_ce/mse losses, as host/models/mlp.c computes them, in float64) and
  captured_from_run(), which makes a captured file from an infl MLP run and its data: the
  CI test of the format, with no PyTorch.
- readers of infl run and dataset files through h5py (read_mlp_run, read_split,
  read_documents), shared with infl.torch.

Needs numpy and h5py; infl/__init__ does not import this module.
"""

import math
import os

import h5py
import numpy as np

FORMAT = "captured"
VERSION = 1
MAX_NAME_BYTES = 47  # a layer's module name in /model/names
_RESERVED = ("model", "checkpoints")


def _tmp_name(path):
    # infl's own temporaries are PATH.tmp.PID (host/core/util.c, infl_out_begin)
    return "%s.tmp.%d" % (path, os.getpid())


def _begin_output(path, force):
    """Refuses to overwrite without force; returns the temporary name to write."""
    path = os.fspath(path)
    if not path:
        raise ValueError("no output file given")
    if os.path.isdir(path):
        raise ValueError("%s: is a directory, expected a file name" % path)
    if os.path.exists(path) and not force:
        raise FileExistsError("%s: exists; pass force=True to overwrite it" % path)
    return _tmp_name(path)


def _first_nonfinite(a):
    """(row, column, 'NaN'|'+Inf'|'-Inf') of the first non-finite entry of a 1-D or 2-D
    array, or None."""
    bad = ~np.isfinite(a)
    if not bad.any():
        return None
    idx = np.argwhere(bad)[0]
    v = a[tuple(idx)]
    what = "NaN" if np.isnan(v) else ("+Inf" if v > 0 else "-Inf")
    return (int(idx[0]), int(idx[1]) if a.ndim == 2 else None, what)


def _as_f32(a, what):
    """a as a float32 array; refuses integer, bool, complex and object arrays by name."""
    if hasattr(a, "detach"):  # a torch tensor handed in directly
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.dtype.kind != "f":
        raise TypeError("%s: expected a floating-point array, found dtype %s" % (what, a.dtype))
    return np.ascontiguousarray(a, dtype=np.float32)


def _chunk_rows(d, known_rows):
    # rows per chunk: up to 1024, at most ~1 MiB of float32 per chunk, at most the rows there are
    rows = max(16, min(1024, (1 << 20) // (4 * max(d, 1))))
    if known_rows is not None:
        rows = min(rows, max(int(known_rows), 1))
    return rows


class _Split:
    def __init__(self, name):
        self.name = name
        self.offsets = None  # int64 [N+1] once known
        self.grow = None  # rows per example while the first checkpoint writes it
        self.y = None
        self.flipped = None
        self.written = False  # the top-level group exists


class _Stream:
    """The datasets of one split at one checkpoint, being appended to."""

    def __init__(self):
        self.examples = 0
        self.rows = 0
        self.sampled = None  # whether Ds is given (decided by the first append)
        self.A, self.D, self.Ds = [], [], []
        self.loss = None


class CapturedWriter:
    """Writes a captured file, one checkpoint after another, split by split, batch by batch.

    layers: [(name, d_in, d_out, bias)], the captured linear layers in a fixed order
        (z = W a + b with W [d_out, d_in]).
    outputs: the model's output width (classes or vocabulary; 0 unknown).
    tokens: 1 when an example has several token rows, 0 when each example is one row.
    source, loss: free text (what the model is; which per-example loss D is the gradient of).
    weight_decay: the L2 term (wd/2)|w|^2 of the training objective, if any (infl adds it to
        the curvature's eigenvalues, as for its own MLP); 0 = none.
    force: overwrite an existing file. The file is written to PATH.tmp.PID and renamed to
    path by close(); abort() (or an exception inside a `with` block) removes it.

    Usage::

        with CapturedWriter("cap.h5", [("0", 784, 64, 1), ("2", 64, 10, 1)], outputs=10) as w:
            w.add_split("train", n=60000, y=labels)
            w.begin_checkpoint(step=500, lr=0.1, epoch=1.0, weights={"0": (W0, b0), "2": (W2, b2)})
            for A_list, D_list, loss in batches:
                w.append("train", A_list, D_list, loss)
    """

    def __init__(self, path, layers, outputs=0, tokens=0, source="", loss="", force=False, compression=None,
                 weight_decay=0.0):
        self.path = os.fspath(path)
        self.layers = []
        names = set()
        if not layers:
            raise ValueError("%s: no layers given; a captured file needs at least one linear layer" % self.path)
        for l, lay in enumerate(layers):
            if len(lay) != 4:
                raise ValueError("%s: layer %d: expected (name, d_in, d_out, bias), got %r" % (self.path, l, lay))
            name, d_in, d_out, bias = lay
            name = str(name)
            if not name or len(name.encode()) > MAX_NAME_BYTES:
                raise ValueError("%s: layer %d: name %r must be 1 to %d bytes" % (self.path, l, name, MAX_NAME_BYTES))
            if name in names:
                raise ValueError("%s: layer %d: name %r is used twice" % (self.path, l, name))
            names.add(name)
            if int(d_in) != d_in or int(d_out) != d_out or d_in < 1 or d_out < 1:
                raise ValueError("%s: layer %d (%s): d_in %r, d_out %r; expected integers >= 1" % (self.path, l, name, d_in, d_out))
            self.layers.append((name, int(d_in), int(d_out), 1 if bias else 0))
        if tokens not in (0, 1):
            raise ValueError("%s: tokens is %r; expected 0 (one row per example) or 1 (token rows)" % (self.path, tokens))
        if not (float(weight_decay) >= 0 and np.isfinite(weight_decay)):
            raise ValueError("%s: weight_decay is %r; expected a finite value >= 0 (the objective's (wd/2)|w|^2)"
                             % (self.path, weight_decay))
        if int(outputs) != outputs or outputs < 0:
            raise ValueError("%s: outputs is %r; expected an integer >= 0" % (self.path, outputs))
        self.tokens = int(tokens)
        self.compression = compression
        self.tmp = _begin_output(self.path, force)
        self.splits = {}
        self.ckpt = None  # name of the checkpoint being written
        self.ckpts = {}  # name -> step
        self.streams = {}  # split -> _Stream of the current checkpoint
        self.f = h5py.File(self.tmp, "w")
        try:
            self.f.attrs["infl_format"] = FORMAT
            self.f.attrs["infl_version"] = np.int32(VERSION)
            m = self.f.create_group("model")
            m.attrs["kind"] = FORMAT
            m.attrs["d_in"] = np.array([x[1] for x in self.layers], dtype=np.int32)
            m.attrs["d_out"] = np.array([x[2] for x in self.layers], dtype=np.int32)
            m.attrs["bias"] = np.array([x[3] for x in self.layers], dtype=np.int32)
            m.attrs["outputs"] = np.int32(outputs)
            m.attrs["tokens"] = np.int32(self.tokens)
            m.attrs["weight_decay"] = np.float64(weight_decay)
            m.attrs["source"] = str(source)
            m.attrs["loss"] = str(loss)
            m.create_dataset("names", data=[x[0] for x in self.layers], dtype=h5py.string_dtype())
            self.f.create_group("checkpoints")
        except BaseException:
            self.abort()
            raise

    # ---- splits ----

    def add_split(self, name, offsets=None, y=None, flipped=None, n=None):
        """Declares split `name` (e.g. "train"). offsets int [N+1] (example i's rows are
        offsets[i]..offsets[i+1]-1), or n (= N) when every example is one row (tokens=0), or
        neither: then the first checkpoint's appends (their `counts`) fix them. y, flipped:
        optional int [N] labels and label-flip marks (as in infl datasets)."""
        self._check_open()
        name = str(name)
        if not name or "/" in name or name.startswith(".") or name in _RESERVED:
            raise ValueError("%s: split name %r: expected a plain name such as 'train' (not %s)" % (self.path, name, " or ".join(_RESERVED)))
        if name in self.splits:
            raise ValueError("%s: split %r was already added" % (self.path, name))
        s = _Split(name)
        if offsets is None and n is not None:
            if self.tokens:
                raise ValueError("%s: split %r: a model of token rows (tokens=1) needs offsets, not n" % (self.path, name))
            offsets = np.arange(int(n) + 1, dtype=np.int64)
        if offsets is not None:
            s.offsets = self._check_offsets(name, offsets)
        self.splits[name] = s
        if y is not None or flipped is not None:
            self.set_labels(name, y, flipped)
        if s.offsets is not None:
            self._write_split(s)

    def set_labels(self, split, y=None, flipped=None):
        """Sets a split's optional class labels y int [N] and flipped marks int [N]."""
        s = self._split(split)
        for what, v in (("y", y), ("flipped", flipped)):
            if v is None:
                continue
            if hasattr(v, "detach"):
                v = v.detach().cpu().numpy()
            v = np.asarray(v)
            if v.ndim != 1 or v.dtype.kind not in "iub":
                raise TypeError("%s: split %r: %s must be a 1-D integer array, found %s %s" % (self.path, split, what, v.dtype, v.shape))
            if v.size and (v.min() < 0 or v.max() > np.iinfo(np.int32).max):
                raise ValueError("%s: split %r: %s holds %d; expected values 0 to 2^31-1" % (self.path, split, what, int(v.min() if v.min() < 0 else v.max())))
            n = self._n(s)
            if n is not None and v.shape[0] != n:
                raise ValueError("%s: split %r: %s has %d entries; the split has %d examples" % (self.path, split, what, v.shape[0], n))
            setattr(s, what, v.astype(np.int32))
            if s.written:
                g = self.f[split]
                if what in g:
                    del g[what]
                g.create_dataset(what, data=getattr(s, what))

    def _check_offsets(self, name, offsets):
        if hasattr(offsets, "detach"):
            offsets = offsets.detach().cpu().numpy()
        o = np.asarray(offsets)
        if o.ndim != 1 or o.shape[0] < 1 or o.dtype.kind not in "iu":
            raise ValueError("%s: split %r: offsets must be a 1-D integer array [N+1], found %s %s" % (self.path, name, o.dtype, o.shape))
        o = o.astype(np.int64)
        if o[0] != 0:
            raise ValueError("%s: split %r: offsets[0] is %d; expected 0" % (self.path, name, o[0]))
        d = np.diff(o)
        if (d < 0).any():
            i = int(np.argmax(d < 0))
            raise ValueError("%s: split %r: offsets[%d:%d] = %d, %d; expected non-decreasing offsets" % (self.path, name, i, i + 2, o[i], o[i + 1]))
        if not self.tokens and (d != 1).any():
            i = int(np.argmax(d != 1))
            raise ValueError("%s: split %r: example %d has %d rows; with tokens=0 every example is exactly one row" % (self.path, name, i, d[i]))
        return o

    def _split(self, split):
        self._check_open()
        if split not in self.splits:
            raise KeyError("%s: no split %r; add_split() it first (have: %s)" % (self.path, split, ", ".join(self.splits) or "none"))
        return self.splits[split]

    @staticmethod
    def _n(s):
        return None if s.offsets is None else s.offsets.shape[0] - 1

    def _write_split(self, s):
        g = self.f.create_group(s.name)
        g.create_dataset("offsets", data=s.offsets, dtype=np.int64)
        g.attrs["n"] = np.int64(s.offsets.shape[0] - 1)
        for what in ("y", "flipped"):
            v = getattr(s, what)
            if v is not None:
                if v.shape[0] != s.offsets.shape[0] - 1:
                    raise ValueError("%s: split %r: %s has %d entries; the split has %d examples" % (self.path, s.name, what, v.shape[0], s.offsets.shape[0] - 1))
                g.create_dataset(what, data=v)
        s.written = True

    # ---- checkpoints ----

    def begin_checkpoint(self, step, lr, epoch=0.0, weights=None):
        """Starts checkpoint `step` (the group /checkpoints/NNNNNN): lr is the learning rate
        over the interval that ends here (TracIn's weight); weights the captured layers'
        values, {name: (W, b)} (b None without a bias; W alone also works) or a list in
        layer order, W [d_out, d_in]. Finishes the previous checkpoint, which must have
        written every split it started completely."""
        self._check_open()
        self._finish_checkpoint()
        if int(step) != step or step < 0:
            raise ValueError("%s: checkpoint step %r; expected an integer >= 0" % (self.path, step))
        step = int(step)
        name = "%06d" % step
        if name in self.ckpts:
            raise ValueError("%s: checkpoint at step %d was already written" % (self.path, step))
        lr, epoch = float(lr), float(epoch)
        if not math.isfinite(lr) or not math.isfinite(epoch) or epoch < 0:
            raise ValueError("%s: checkpoint at step %d: lr %g and epoch %g must be finite (epoch >= 0)" % (self.path, step, lr, epoch))
        if weights is None:
            raise ValueError("%s: checkpoint at step %d: no weights given; they identify the checkpoint (W{l}, b{l} are required)" % (self.path, step))
        g = self.f["checkpoints"].create_group(name)
        g.attrs["step"] = np.int64(step)
        g.attrs["lr"] = np.float64(lr)
        g.attrs["epoch"] = np.float64(epoch)
        for l, (lname, d_in, d_out, bias) in enumerate(self.layers):
            if isinstance(weights, dict):
                if lname not in weights:
                    raise ValueError("%s: checkpoint at step %d: no weights for layer %d (%s)" % (self.path, step, l, lname))
                wb = weights[lname]
            else:
                if len(weights) != len(self.layers):
                    raise ValueError("%s: checkpoint at step %d: %d weights for %d layers" % (self.path, step, len(weights), len(self.layers)))
                wb = weights[l]
            W, b = (wb if isinstance(wb, (tuple, list)) else (wb, None))
            where = "checkpoint %s layer %d (%s)" % (name, l, lname)
            W = _as_f32(W, "%s: %s W" % (self.path, where))
            if W.shape != (d_out, d_in):
                raise ValueError("%s: %s: W is %s; expected [d_out, d_in] = [%d, %d]" % (self.path, where, list(W.shape), d_out, d_in))
            self._check_finite(W, "%s: %s W" % (self.path, where))
            g.create_dataset("W%d" % l, data=W)
            if bias:
                if b is None:
                    raise ValueError("%s: %s: the layer has a bias but none was given" % (self.path, where))
                b = _as_f32(b, "%s: %s b" % (self.path, where))
                if b.shape != (d_out,):
                    raise ValueError("%s: %s: b is %s; expected [d_out] = [%d]" % (self.path, where, list(b.shape), d_out))
                self._check_finite(b, "%s: %s b" % (self.path, where))
                g.create_dataset("b%d" % l, data=b)
            elif b is not None:
                raise ValueError("%s: %s: a bias was given for a layer declared without one" % (self.path, where))
        self.ckpts[name] = step
        self.ckpt = name
        self.streams = {}

    def _check_finite(self, a, what, row0=0, offsets=None):
        bad = _first_nonfinite(a)
        if bad is None:
            return
        r, c, v = bad
        if a.ndim == 1:
            raise ValueError("%s entry %d: %s" % (what, r + row0, v))
        ex = ""
        if offsets is not None:
            ex = " (example %d)" % (int(np.searchsorted(offsets, r + row0, side="right")) - 1)
        raise ValueError("%s row %d%s column %d: %s" % (what, r + row0, ex, c, v))

    def append(self, split, A_list, D_list, loss, Ds_list=None, counts=None):
        """Appends the next b examples of `split` at the current checkpoint: per layer l,
        A_list[l] float [r, d_in] (inputs) and D_list[l] float [r, d_out] (gradients of each
        example's own loss), r = the examples' rows; loss float [b]; Ds_list as D_list at
        sampled targets (all appends of a split and checkpoint give it, or none does).
        counts int [b]: the examples' rows (needed for token rows whose offsets were not
        given; checked against them when they were)."""
        s = self._split(split)
        if self.ckpt is None:
            raise ValueError("%s: append to %r before any begin_checkpoint()" % (self.path, split))
        L = len(self.layers)
        where0 = "%s: checkpoint %s split %r" % (self.path, self.ckpt, split)
        loss = _as_f32(loss, "%s loss" % where0)
        if loss.ndim != 1:
            raise ValueError("%s: loss is %s; expected a 1-D array [b] of per-example losses" % (where0, list(loss.shape)))
        b = loss.shape[0]
        st = self.streams.get(split)
        if st is None:
            st = self.streams[split] = _Stream()
        e0 = st.examples
        # the examples' rows
        if counts is not None:
            if hasattr(counts, "detach"):
                counts = counts.detach().cpu().numpy()
            counts = np.asarray(counts)
            if counts.shape != (b,) or counts.dtype.kind not in "iu" or (counts < 0).any():
                raise ValueError("%s: counts must be non-negative integers [%d], found %s %s" % (where0, b, counts.dtype, counts.shape))
            counts = counts.astype(np.int64)
        if s.offsets is not None:
            n = s.offsets.shape[0] - 1
            if e0 + b > n:
                raise ValueError("%s: examples %d..%d appended; the split has %d" % (where0, e0, e0 + b - 1, n))
            have = np.diff(s.offsets[e0:e0 + b + 1])
            if counts is not None and not np.array_equal(have, counts):
                i = int(np.argmax(have != counts))
                raise ValueError("%s: example %d has %d rows; its offsets say %d (the batches must come in the same order, with the same tokens, at every checkpoint)" % (where0, e0 + i, counts[i], have[i]))
            counts = have
        elif counts is None:
            if self.tokens:
                raise ValueError("%s: token rows without offsets: give counts (each example's rows)" % where0)
            counts = np.ones(b, dtype=np.int64)
        r = int(counts.sum())
        r0 = st.rows
        self._check_finite(loss, "%s loss" % where0, row0=e0)
        if len(A_list) != L or len(D_list) != L:
            raise ValueError("%s: %d A and %d D arrays; expected one per layer (%d)" % (where0, len(A_list), len(D_list), L))
        sampled = Ds_list is not None
        if st.sampled is None:
            st.sampled = sampled
        elif st.sampled != sampled:
            raise ValueError("%s: Ds given in some appends and not in others" % where0)
        if sampled and len(Ds_list) != L:
            raise ValueError("%s: %d Ds arrays; expected one per layer (%d)" % (where0, len(Ds_list), L))
        offs = s.offsets if s.offsets is not None else None
        arrays = []
        for l, (lname, d_in, d_out, _) in enumerate(self.layers):
            for kind, lst, d in (("A", A_list, d_in), ("D", D_list, d_out), ("Ds", Ds_list, d_out)):
                if lst is None:
                    continue
                what = "%s layer %d (%s) %s" % (where0, l, lname, kind)
                a = _as_f32(lst[l], what)
                if a.shape != (r, d):
                    raise ValueError("%s: shape %s; expected [%d rows, %d]%s" % (what, list(a.shape), r, d, " (the examples' token rows)" if self.tokens else ""))
                self._check_finite(a, what, row0=r0, offsets=offs)
                arrays.append((l, kind, a))
        # everything checked: write
        if st.loss is None:
            self._create_stream(s, st)
        self._extend(st.loss, e0, loss)
        for l, kind, a in arrays:
            self._extend(getattr(st, kind)[l], r0, a)
        if s.offsets is None:
            s.grow.append(counts)
        st.examples += b
        st.rows += r

    def _create_stream(self, s, st):
        g = self.f["checkpoints"][self.ckpt].create_group(s.name)
        n = self._n(s)
        R = None if s.offsets is None else int(s.offsets[-1])
        if s.offsets is None:
            if s.grow is not None:
                raise ValueError("%s: split %r: its rows are still being fixed by another checkpoint" % (self.path, s.name))
            s.grow = []
        st.loss = g.create_dataset("loss", shape=(n or 0,), maxshape=(None,), dtype=np.float32, chunks=(_chunk_rows(1, n),))
        st.A, st.D, st.Ds = [], [], []
        for l, (_, d_in, d_out, _) in enumerate(self.layers):
            lg = g.create_group("layer%d" % l)
            kinds = (("A", d_in), ("D", d_out)) + ((("Ds", d_out),) if st.sampled else ())
            for kind, d in kinds:
                ds = lg.create_dataset(kind, shape=(R or 0, d), maxshape=(None, d), dtype=np.float32,
                                       chunks=(_chunk_rows(d, R), d), compression=self.compression)
                getattr(st, kind).append(ds)

    @staticmethod
    def _extend(ds, at, a):
        end = at + a.shape[0]
        if ds.shape[0] < end:
            ds.resize(end, axis=0)
        if a.shape[0]:
            ds[at:end] = a

    def _finish_checkpoint(self):
        if self.ckpt is None:
            return
        for split, st in self.streams.items():
            s = self.splits[split]
            where = "%s: checkpoint %s split %r" % (self.path, self.ckpt, split)
            if s.offsets is None:
                # the first checkpoint that wrote the split fixes its examples and rows
                counts = np.concatenate(s.grow) if s.grow else np.zeros(0, dtype=np.int64)
                s.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
                s.grow = None
                self._write_split(s)
            n, R = s.offsets.shape[0] - 1, int(s.offsets[-1])
            if st.examples != n or st.rows != R:
                raise ValueError("%s: %d examples (%d rows) written; the split has %d (%d rows)" % (where, st.examples, st.rows, n, R))
        self.ckpt = None
        self.streams = {}

    # ---- the end ----

    def close(self):
        """Finishes the last checkpoint, writes /checkpoints' `final` and renames the
        temporary file to its final name. On any error the temporary file is removed."""
        if self.f is None:
            return
        try:
            self._finish_checkpoint()
            if not self.ckpts:
                raise ValueError("%s: no checkpoint was written; a captured file needs at least one" % self.path)
            for s in self.splits.values():
                if s.offsets is None:
                    raise ValueError("%s: split %r: nothing was appended to it, so its examples are unknown" % (self.path, s.name))
                if not s.written:
                    self._write_split(s)
            final = max(self.ckpts, key=lambda k: self.ckpts[k])
            self.f["checkpoints"].attrs["final"] = final
            self.f.close()
            self.f = None
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self):
        """Drops everything written: the temporary file is removed, path is left as it was."""
        if self.f is not None:
            try:
                self.f.close()
            except Exception:
                pass
            self.f = None
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass

    def _check_open(self):
        if self.f is None:
            raise ValueError("%s: the writer is closed" % self.path)

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is None:
            self.close()
        else:
            self.abort()
        return False


# ---- reading infl's own files (h5py) ----


def parse_ref(ref):
    """'FILE:/split[a:b]' -> (file, split, a, b) with a, b None when absent."""
    ref = os.fspath(ref)
    i = ref.rfind(":/")
    if i < 0:
        raise ValueError("%r: expected FILE:/split, e.g. data.h5:/train" % ref)
    path, rest = ref[:i], ref[i + 2:]
    a = b = None
    if rest.endswith("]") and "[" in rest:
        rest, rng = rest[:-1].split("[", 1)
        lo, _, hi = rng.partition(":")
        a = int(lo) if lo else None
        b = int(hi) if hi else None
    return path, rest.strip("/"), a, b


def _check_format(f, path, want):
    fmt = f.attrs.get("infl_format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != want:
        raise ValueError("%s: infl_format is %r, expected %r" % (path, fmt, want))


def read_split(ref):
    """An infl dataset split of feature rows: {'x': float32 [N, D], 'y': int32 [N] or
    float32 [N, K] or None, 'flipped': int32 [N] or None}."""
    path, split, a, b = parse_ref(ref)
    with h5py.File(path, "r") as f:
        _check_format(f, path, "dataset")
        g = f[split]
        if "x" not in g:
            raise ValueError("%s: /%s holds no feature rows x (a documents split? read_documents)" % (path, split))
        sl = slice(a, b)
        out = {"x": g["x"][sl].astype(np.float32), "y": None, "flipped": None}
        if "y" in g:
            out["y"] = g["y"][sl]
        if "flipped" in g:
            out["flipped"] = g["flipped"][sl].astype(np.int32)
    return out


def read_documents(ref):
    """An infl documents split: {'docs': [int32 arrays], 'y': int32 [N] or None, 'eot': int,
    'vocab': int}."""
    path, split, a, b = parse_ref(ref)
    with h5py.File(path, "r") as f:
        _check_format(f, path, "dataset")
        g = f[split]
        o = g["offsets"][:]
        n = o.shape[0] - 1
        a = 0 if a is None else a
        b = n if b is None else b
        tok = g["tokens"][o[a]:o[b]]
        docs = [tok[o[i] - o[a]:o[i + 1] - o[a]].astype(np.int64) for i in range(a, b)]
        y = g["y"][a:b] if "y" in g else None
        t = f["tokenizer"].attrs
        return {"docs": docs, "y": y, "eot": int(t["eot"]), "vocab": int(t["vocab"])}


def _attr_str(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def read_mlp_run(path):
    """An infl MLP run: {'widths': [d0..dL], 'activation', 'loss', 'weight_decay', 'data',
    'checkpoints': [{'name', 'step', 'lr', 'epoch', 'weights': [(W [d_out, d_in], b)]}] sorted
    by step, 'final': the final checkpoint's name}."""
    path = os.fspath(path)
    with h5py.File(path, "r") as f:
        _check_format(f, path, "run")
        m = f["model"].attrs
        kind = _attr_str(m.get("kind", "mlp"))
        if kind != "mlp":
            raise ValueError("%s: /model kind is %r; this reads MLP runs" % (path, kind))
        widths = [int(w) for w in m["layers"]]
        run = {"widths": widths, "activation": _attr_str(m["activation"]), "loss": _attr_str(m["loss"]),
               "weight_decay": float(m["weight_decay"]), "data": _attr_str(m.get("data", "")), "checkpoints": []}
        c = f["checkpoints"]
        for name in c:
            g = c[name]
            ws = [(g["W%d" % l][:], g["b%d" % l][:]) for l in range(len(widths) - 1)]
            run["checkpoints"].append({"name": name, "step": int(g.attrs["step"]), "lr": float(g.attrs["lr"]),
                                       "epoch": float(g.attrs["epoch"]), "weights": ws})
        run["checkpoints"].sort(key=lambda ck: ck["step"])
        run["final"] = _attr_str(c.attrs["final"]) if "final" in c.attrs else run["checkpoints"][-1]["name"]
    return run


# ---- a NumPy reference of infl's MLP (host/models/mlp.c), float64 ----

_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def act_forward(act, z):
    if act == "relu":
        return np.maximum(z, 0.0)
    if act == "tanh":
        return np.tanh(z)
    if act == "gelu":  # exact: z Φ(z), Φ(z) = erfc(−z/√2)/2
        return 0.5 * z * _erfc(-z / math.sqrt(2.0))
    raise ValueError("activation %r: expected relu, tanh or gelu" % act)


def act_derivative(act, z):
    if act == "relu":
        return (z > 0).astype(z.dtype)
    if act == "tanh":
        return 1.0 - np.tanh(z) ** 2
    if act == "gelu":
        return 0.5 * _erfc(-z / math.sqrt(2.0)) + z * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    raise ValueError("activation %r: expected relu, tanh or gelu" % act)


def loss_and_grad(loss, z, y):
    """Per-example losses [B] and ∂ℓ_i/∂z_i [B, K] of logits z [B, K] at targets y (int
    [B] for softmax_ce and sigmoid_ce, float [B, K] for mse), as infl's loss_grad."""
    if loss == "softmax_ce":
        m = z.max(axis=1, keepdims=True)
        lse = m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))
        g = np.exp(z - lse)
        g[np.arange(z.shape[0]), y] -= 1.0
        return (lse[:, 0] - z[np.arange(z.shape[0]), y]), g
    if loss == "sigmoid_ce":
        zz = z[:, 0]
        sp = np.maximum(zz, 0.0) + np.log1p(np.exp(-np.abs(zz)))
        return sp - y * zz, (1.0 / (1.0 + np.exp(-zz)) - y)[:, None]
    if loss == "mse":
        d = z - y
        return 0.5 * (d * d).sum(axis=1), d
    raise ValueError("loss %r: expected softmax_ce, sigmoid_ce or mse" % loss)


def sample_targets(loss, z, rng):
    """Targets drawn from the model's predictive distribution at logits z [B, K]."""
    if loss == "softmax_ce":
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        u = rng.random(z.shape[0])[:, None]
        return np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), z.shape[1] - 1)
    if loss == "sigmoid_ce":
        return (rng.random(z.shape[0]) < 1.0 / (1.0 + np.exp(-z[:, 0]))).astype(np.int64)
    return z + rng.standard_normal(z.shape)


def mlp_factors(weights, act, loss, x, y, sampled_y=None):
    """infl's MLP on a batch x [B, d0] at targets y: per layer the inputs A_l [B, d_l] and
    output gradients D_l [B, d_{l+1}] of each example's own loss, the losses [B], and
    (with sampled_y) the D_l at those targets. weights [(W [d_out, d_in], b)]; float64."""
    a = np.asarray(x, dtype=np.float64)
    A, Z = [], []
    for l, (W, b) in enumerate(weights):
        A.append(a)
        z = a @ np.asarray(W, np.float64).T + np.asarray(b, np.float64)
        Z.append(z)
        if l < len(weights) - 1:
            a = act_forward(act, z)

    def backward(targets):
        losses, d = loss_and_grad(loss, Z[-1], targets)
        D = [None] * len(weights)
        for l in range(len(weights) - 1, -1, -1):
            D[l] = d
            if l:
                d = (d @ np.asarray(weights[l][0], np.float64)) * act_derivative(act, Z[l - 1])
        return losses, D

    losses, D = backward(y)
    Ds = backward(sampled_y)[1] if sampled_y is not None else None
    return A, D, losses, Ds


def captured_from_run(out, run, data, checkpoints=None, batch=256, sample_fisher=False, seed=0, force=False):
    """Writes a captured file `out` of infl MLP run `run` (a path) through the NumPy
    reference: data {split: 'FILE:/split[a:b]'}, checkpoints a list of names or steps (None:
    all), sample_fisher: also Ds at targets drawn from the model (NumPy's generator with
    `seed`, not infl's, so not the labels `infl fit` would draw). Returns out."""
    r = read_mlp_run(run)
    widths, act, loss = r["widths"], r["activation"], r["loss"]
    cks = r["checkpoints"]
    if checkpoints is not None:
        want = {str(c) for c in checkpoints}
        cks = [c for c in cks if c["name"] in want or str(c["step"]) in want]
    layers = [("layer%d" % l, widths[l], widths[l + 1], 1) for l in range(len(widths) - 1)]
    splits = {name: read_split(ref) for name, ref in data.items()}
    desc = "numpy reference of the infl run %s: %s %s %s" % (os.path.basename(os.fspath(run)), "-".join(map(str, widths)), act, loss)
    rng = np.random.default_rng(seed)
    with CapturedWriter(out, layers, outputs=widths[-1], tokens=0, source=desc, weight_decay=r["weight_decay"],
                        loss="%s of each example (infl's)" % loss, force=force) as w:
        for name, s in splits.items():
            y = s["y"] if s["y"] is not None and s["y"].ndim == 1 else None
            w.add_split(name, n=s["x"].shape[0], y=y, flipped=s["flipped"])
        for ck in cks:
            w.begin_checkpoint(ck["step"], ck["lr"], ck["epoch"], ck["weights"])
            for name, s in splits.items():
                x, y = s["x"], s["y"]
                for i in range(0, x.shape[0], batch):
                    xb, yb = x[i:i + batch], y[i:i + batch]
                    ys = None
                    if sample_fisher:
                        z = x[i:i + batch].astype(np.float64)
                        for l, (W, b) in enumerate(ck["weights"]):
                            z = z @ W.T.astype(np.float64) + b
                            if l < len(ck["weights"]) - 1:
                                z = act_forward(act, z)
                        ys = sample_targets(loss, z, rng)
                    A, D, losses, Ds = mlp_factors(ck["weights"], act, loss, xb, yb, ys)
                    w.append(name, A, D, losses, Ds)
    return out
