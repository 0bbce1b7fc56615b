"""test_cdefs.py — infl/_cdefs.py mirrors include/infl.h: it is what gen_cdefs.py makes of
the header today, and a C program compiled against the header agrees with ctypes on every
mirrored struct's size and every field's offset and size (a drift in field order, type or
count fails here, not as corrupted memory)."""
import ctypes
import io
import os
import shutil
import subprocess
import sys

import pytest

from conftest import SRC
from infl import _cdefs

HEADER = os.path.join(SRC, "include", "infl.h")
sys.path.insert(0, os.path.join(SRC, "python"))
import gen_cdefs  # noqa: E402


def test_generated_file_is_current():
    with open(HEADER, encoding="utf-8") as f:
        h = gen_cdefs.Header(f.read())
    buf = io.StringIO()
    gen_cdefs.emit(h, buf)
    with open(_cdefs.__file__, encoding="utf-8") as f:
        assert f.read() == buf.getvalue(), \
            "python/infl/_cdefs.py is stale: python3 python/gen_cdefs.py include/infl.h > python/infl/_cdefs.py"


def test_every_header_function_is_mirrored_and_exported():
    from infl._lib import lib
    L = lib()
    assert len(_cdefs.FUNCTIONS) >= 50
    for name in _cdefs.FUNCTIONS:
        assert hasattr(L, name), name


@pytest.mark.skipif(not shutil.which(os.environ.get("CC", "cc")), reason="no C compiler (cc) to compare layouts")
def test_struct_layouts_match_c(tmp_path):
    lines = ["#include <stddef.h>", "#include <stdio.h>", "#include \"infl.h\"", "int main(void) {"]
    expect = []
    for s in _cdefs.STRUCTS:
        n = s.__name__
        lines.append(f'    printf("{n} %zu\\n", sizeof({n}));')
        expect.append(f"{n} {ctypes.sizeof(s)}")
        for f, _ in s._fields_:
            d = getattr(s, f)
            lines.append(f'    printf("{n}.{f} %zu %zu\\n", offsetof({n}, {f}), sizeof((({n} *)0)->{f}));')
            expect.append(f"{n}.{f} {d.offset} {d.size}")
    lines += ["    return 0;", "}"]
    (tmp_path / "layout.c").write_text("\n".join(lines) + "\n")
    exe = tmp_path / "layout"
    subprocess.run([os.environ.get("CC", "cc"), "-std=c11", "-I", os.path.dirname(HEADER), "-o", str(exe),
                    str(tmp_path / "layout.c")], check=True, capture_output=True)
    got = subprocess.run([str(exe)], check=True, capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}).stdout.split("\n")[:-1]
    bad = [f"C: {g}  ctypes: {e}" for g, e in zip(got, expect) if g != e]
    assert len(got) == len(expect) and not bad, "\n".join(bad[:20])
    assert len(_cdefs.STRUCTS) >= 25
