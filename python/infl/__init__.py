"""infl — Python bindings of libinfl, the influence-function engine (pure Python, ctypes).

    import infl
    with infl.Context(backend="cpu") as ctx:
        r = ctx.rank(run="run.h5", query="fmnist.h5:/test[0:8]", method="tracin", top=10)
        r.proponents, r.proponent_scores      # int64 / float32 [8, 10]

The shared library is found through $INFL_LIBRARY, the dynamic loader (an installed
prefix's lib/ on LD_LIBRARY_PATH or in the ldconfig cache), `pkg-config infl`, or
/usr/local/lib; it is loaded on first use (infl._lib). Failed calls raise InflError
(``.status`` name, ``.code``, ``.detail``), one subclass per status. A Context is not
thread-safe in C; the Python object serialises its calls (one Context per thread for
parallel work).

This module imports neither torch nor h5py (infl.torch and infl.captured are optional).
"""
from . import _lib

_lib.preload()  # before NumPy: see infl/_lib.py

from ._api import Context, RankResult, SelfResult, build_info, info, status_name, version  # noqa: E402
from ._lib import ERRORS, STATUS, InflError, LibraryNotFoundError
from ._lib import path as library_path

__version__ = "0.1.0"

# one exception class per status: infl.InflIoError, infl.InflFormatError, infl.InflArgError, ...
globals().update({cls.__name__: cls for cls in ERRORS.values()})

__all__ = ["Context", "RankResult", "SelfResult", "InflError", "LibraryNotFoundError", "STATUS", "version",
           "build_info", "info", "status_name", "library_path"] + [cls.__name__ for cls in ERRORS.values()]
