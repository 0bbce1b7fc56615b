"""_lib.py — finds and loads libinfl.so, declares its functions from _cdefs, and turns
status codes into exceptions.

The library is looked for, in order: the file named by the environment variable
INFL_LIBRARY; libinfl.so.<major> through the dynamic loader (LD_LIBRARY_PATH, the ldconfig
cache, /usr/lib); ctypes.util.find_library("infl"); the libdir of `pkg-config infl` (so
PKG_CONFIG_PATH pointing at an installed prefix's lib/pkgconfig works); /usr/local/lib.
`import infl` tries to load it before NumPy (preload): libinfl links OpenBLAS's OpenMP
build, and whichever libopenblas.so.0 a process loads first serves both (NumPy's, through
Debian's libblas.so.3, is the pthreads build, whose threads contend with OpenMP's). When
that fails, `import infl` still works (e.g. for infl.captured's NumPy writer) and the error
is raised on first use.
"""
import ctypes
import ctypes.util
import os
import shutil
import subprocess
import threading

from . import _cdefs

_MAJOR, _MINOR, _PATCH = _cdefs.VERSION


class LibraryNotFoundError(OSError):
    """libinfl.so could not be found or loaded (the message says where it was looked for)."""


class InflError(Exception):
    """A libinfl call failed.

    Attributes: ``status`` (the status name, e.g. ``"INFL_E_FORMAT"``), ``code`` (its
    value, e.g. -4) and ``detail`` (the context's detail: the file, the object and what
    was expected). Each status has a subclass (InflIoError, InflFormatError, ...;
    InflArgError is also a ValueError)."""

    def __init__(self, status, code, detail):
        self.status = status
        self.code = code
        self.detail = detail
        super().__init__(f"{status}: {detail}" if detail else status)


def _error_class(name):
    words = name[len("INFL_E_"):].split("_")
    cls_name = "Infl" + "".join(w.capitalize() for w in words) + "Error"
    bases = (InflError, ValueError) if name == "INFL_E_ARG" else (InflError,)
    return type(cls_name, bases, {"__doc__": f"libinfl returned {name}.", "__module__": "infl"})


STATUS = dict(_cdefs.ENUMS["infl_status"])  # name -> code
ERRORS = {code: _error_class(name) for name, code in STATUS.items() if code != 0}  # code -> class


def error(code, detail):
    """The InflError subclass for `code` (a status value), with `detail`."""
    name = {c: n for n, c in STATUS.items()}.get(code, "INFL_E_UNKNOWN")
    return ERRORS.get(code, InflError)(name, code, detail)


def arg_error(detail):
    """An InflArgError raised by the Python layer before any C call."""
    return error(STATUS["INFL_E_ARG"], detail)


def enum_value(enum, value, what, aliases=None):
    """The value of `value` (a name such as "tracin", "sgd-influence", "softmax_ce", or an
    int) in the C enum `enum`; names are the constants' lowercase suffixes, '-' as '_'."""
    consts = _cdefs.ENUMS[enum]
    prefix = os.path.commonprefix([c for c, _ in consts])
    prefix = prefix[: prefix.rfind("_") + 1]
    names = {c[len(prefix):].lower(): v for c, v in consts}
    names.update(aliases or {})
    if isinstance(value, int) and not isinstance(value, bool) and value in names.values():
        return value
    key = str(value).lower().replace("-", "_")
    if key not in names:
        raise arg_error(f"{what}: expected one of {', '.join(sorted(names))}, got {value!r}")
    return names[key]


_lock = threading.Lock()
_lib = None
_path = None


def _candidates():
    env = os.environ.get("INFL_LIBRARY")
    if env:
        return [("INFL_LIBRARY", env)], True
    c = [("the dynamic loader", f"libinfl.so.{_MAJOR}")]
    found = ctypes.util.find_library("infl")
    if found:
        c.append(("ctypes.util.find_library", found))
    if shutil.which("pkg-config"):
        try:
            libdir = subprocess.run(["pkg-config", "--variable=libdir", "infl"], capture_output=True,
                                    text=True, timeout=10).stdout.strip()
            if libdir:
                c.append(("pkg-config infl", os.path.join(libdir, f"libinfl.so.{_MAJOR}")))
        except (OSError, subprocess.SubprocessError):
            pass
    c.append(("/usr/local/lib", f"/usr/local/lib/libinfl.so.{_MAJOR}"))
    return c, False


def _declare(lib):
    for name, (restype, argtypes) in _cdefs.FUNCTIONS.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


def lib():
    """The loaded library (ctypes.CDLL, every function of infl.h declared). Raises
    LibraryNotFoundError when it cannot be found, or when its version is not the
    header's this package mirrors (major.minor)."""
    global _lib, _path
    with _lock:
        if _lib is not None:
            return _lib
        cands, from_env = _candidates()
        tried = []
        for where, path in cands:
            try:
                handle = ctypes.CDLL(path)
            except OSError as e:
                tried.append(f"{path} ({where}: {e})")
                if from_env:
                    break
                continue
            _declare(handle)
            n = handle.infl_version_number()
            got = (n // 10000, n // 100 % 100, n % 100)
            if got[:2] != (_MAJOR, _MINOR):
                raise LibraryNotFoundError(
                    f"{path} is libinfl {'.'.join(map(str, got))}; this package mirrors infl.h "
                    f"{_MAJOR}.{_MINOR}.x (its structs may differ): install the matching version, or set "
                    f"INFL_LIBRARY to a libinfl.so.{_MAJOR} of version {_MAJOR}.{_MINOR}")
            _lib, _path = handle, path
            return _lib
        raise LibraryNotFoundError(
            "libinfl.so not found; tried " + "; ".join(tried) + ". Install it (cmake --install build "
            "--prefix P, then add P/lib to LD_LIBRARY_PATH or run ldconfig) or set INFL_LIBRARY to the "
            "file (e.g. build/libinfl.so)")


def preload():
    """Loads the library now if it can be found; otherwise leaves the error for lib()."""
    try:
        lib()
    except OSError:
        pass


def path():
    """The file the library was loaded from (after lib())."""
    lib()
    return _path
