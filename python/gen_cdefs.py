#!/usr/bin/env python3
"""gen_cdefs.py — writes python/infl/_cdefs.py, the ctypes mirror of include/infl.h.

Every struct (fields in the header's order, with their C types), enum, status code and
function prototype of the public header becomes a ctypes definition, so that the Python
package follows the header exactly. Run it after changing include/infl.h:

    python3 python/gen_cdefs.py include/infl.h > python/infl/_cdefs.py

python/tests/test_cdefs.py checks that the file is what this script makes of the header,
and compiles a C program against the header to compare every field's offset and size and
every struct's size with ctypes'.

The parser knows the header's own style (one declaration per statement, no nested struct
definitions, no bit fields), not C at large; it stops with an error on what it cannot read.
"""
import re
import sys

SCALARS = {
    "char": "c_char", "int": "c_int", "unsigned": "c_uint", "unsigned int": "c_uint",
    "int32_t": "c_int32", "int64_t": "c_int64", "uint32_t": "c_uint32", "uint64_t": "c_uint64",
    "double": "c_double", "float": "c_float", "size_t": "c_size_t", "void": "None",
}


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def split_top(text, sep):
    """Splits on `sep` outside (), [] and {}."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


class Header:
    def __init__(self, text):
        self.defines = {}
        for name, value in re.findall(r"^\s*#\s*define\s+(\w+)\s+(\d+)\s*$", text, flags=re.M):
            self.defines[name] = int(value)
        self.status = [(n, int(v)) for n, v in re.findall(r'X\((INFL_\w+),\s*(-?\d+),\s*"', text)]
        body = strip_comments(text)
        body = re.sub(r"#\s*ifdef\s+__cplusplus.*?#\s*endif", " ", body, flags=re.S)
        body = re.sub(r"^\s*#(?:[^\n]*\\\n)*[^\n]*$", " ", body, flags=re.M)
        self.enums = {}      # name -> [(constant, value)]
        self.structs = []    # [(name, [(field, ctype)])]
        self.opaque = set()
        self.callbacks = {}  # name -> ctypes expression
        self.functions = []  # [(name, restype, [argtypes])]
        for st in split_top(body, ";"):
            self.statement(" ".join(st.split()))

    def evaluate(self, expr):
        expr = re.sub(r"\b[A-Za-z_]\w*\b", lambda m: str(self.defines[m.group(0)]), expr)
        if not re.fullmatch(r"[\d\s+\-*/()]+", expr):
            raise SystemExit(f"gen_cdefs: cannot evaluate the array size '{expr}'")
        return int(eval(expr))

    def base_type(self, base, pointers):
        """The ctypes expression of `base` with `pointers` levels of indirection."""
        base = re.sub(r"\b(const|volatile|struct)\b", " ", base)
        base = " ".join(base.split())
        if base == "char" and pointers >= 1:
            t, pointers = "c_char_p", pointers - 1
        elif base == "void" and pointers >= 1:
            t, pointers = "c_void_p", pointers - 1
        elif base in ("FILE",) or base in self.opaque:
            if pointers < 1:
                raise SystemExit(f"gen_cdefs: {base} by value")
            t, pointers = "c_void_p", pointers - 1
        elif base in SCALARS:
            t = SCALARS[base]
        elif base in self.enums:
            t = "c_int"
        elif base in self.callbacks:
            t = base
        elif base in dict(self.structs):
            t = base
        else:
            raise SystemExit(f"gen_cdefs: unknown type '{base}'")
        for _ in range(pointers):
            t = f"POINTER({t})"
        return t

    def declarator(self, base, decl):
        """(name, ctypes expression) of one declarator such as '*const *files', 'w[16 + 1]',
        '(*method)[64]' or '' (an unnamed parameter)."""
        m = re.fullmatch(r"\(\s*\*\s*(\w+)\s*\)\s*\[([^\]]+)\]", decl)
        if m:  # pointer to an array
            return m.group(1), f"POINTER({self.base_type(base, 0)} * {self.evaluate(m.group(2))})"
        pointers = decl.count("*")
        decl = re.sub(r"\*|\bconst\b|\bvolatile\b", " ", decl).strip()
        m = re.fullmatch(r"(\w*)\s*((?:\[[^\]]+\]\s*)*)", decl)
        if not m:
            raise SystemExit(f"gen_cdefs: cannot read the declarator '{decl}'")
        t = self.base_type(base, pointers)
        for dim in reversed(re.findall(r"\[([^\]]+)\]", m.group(2))):
            t = f"({t} * {self.evaluate(dim)})"
        return m.group(1), t

    @staticmethod
    def split_base(decl):
        """'const char *const *files' -> ('const char', '*const *files')."""
        m = re.fullmatch(r"((?:(?:const|volatile|unsigned|signed|struct)\s+)*\w+)\s*(.*)", decl)
        if not m:
            raise SystemExit(f"gen_cdefs: cannot read the declaration '{decl}'")
        base, rest = m.group(1), m.group(2)
        if base in ("unsigned", "signed") and re.match(r"(int|char|long)\b", rest):
            word = rest.split()[0]
            base, rest = f"{base} {word}", rest[len(word):].strip()
        return base, rest

    def statement(self, st):
        m = re.fullmatch(r"typedef enum \{(.*)\} (\w+)", st)
        if m:
            if "INFL_STATUS_TABLE" in m.group(1):
                self.enums[m.group(2)] = list(self.status)
                return
            values, nxt = [], 0
            for item in split_top(m.group(1), ","):
                name, _, value = item.partition("=")
                nxt = self.evaluate(value) if value.strip() else nxt
                values.append((name.strip(), nxt))
                nxt += 1
            self.enums[m.group(2)] = values
            return
        m = re.fullmatch(r"typedef struct \{(.*)\} (\w+)", st)
        if m:
            name, fields = m.group(2), []
            self.structs.append((name, fields))
            for decl in split_top(m.group(1), ";"):
                base, rest = self.split_base(decl)
                for d in split_top(rest, ","):
                    fields.append(self.declarator(base, d))
            return
        m = re.fullmatch(r"typedef struct (\w+) (\w+)", st)
        if m:
            self.opaque.add(m.group(2))
            return
        m = re.fullmatch(r"typedef (.+?)\(\s*\*\s*(\w+)\s*\)\s*\((.*)\)", st)
        if m:
            ret = self.declarator(*self.split_base(m.group(1)))[1]
            args = [self.param(p) for p in split_top(m.group(3), ",")]
            self.callbacks[m.group(2)] = f"CFUNCTYPE({', '.join([ret] + [a for a in args if a])})"
            return
        m = re.fullmatch(r"(.+?)\b(infl_\w+)\s*\((.*)\)", st)
        if m:
            ret_base, ret_rest = self.split_base(m.group(1).strip())
            restype = self.declarator(ret_base, ret_rest)[1]
            args = [self.param(p) for p in split_top(m.group(3), ",")]
            self.functions.append((m.group(2), restype, [a for a in args if a]))
            return
        raise SystemExit(f"gen_cdefs: cannot read the statement '{st[:120]}'")

    def param(self, p):
        if p == "void":
            return None
        base, rest = self.split_base(p)
        return self.declarator(base, rest)[1]


def emit(h, out):
    w = out.write
    w('"""_cdefs.py — the ctypes mirror of include/infl.h, written by python/gen_cdefs.py.\n\n'
      "Do not edit: run `python3 python/gen_cdefs.py include/infl.h > python/infl/_cdefs.py`.\n"
      '"""\n')
    w("# flake8: noqa\nfrom ctypes import (CFUNCTYPE, POINTER, Structure, c_char, c_char_p, c_double, c_float, c_int,\n"
      "                    c_int32, c_int64, c_size_t, c_uint, c_uint32, c_uint64, c_void_p)\n\n")
    v = h.defines
    w(f"VERSION = ({v['INFL_VERSION_MAJOR']}, {v['INFL_VERSION_MINOR']}, {v['INFL_VERSION_PATCH']})\n")
    for name in sorted(v):
        if not name.startswith("INFL_VERSION_"):
            w(f"{name} = {v[name]}\n")
    w("\n# enum name -> [(constant, value)], in the header's order\nENUMS = {\n")
    for name, values in h.enums.items():
        w(f"    {name!r}: [\n")
        for c, val in values:
            w(f"        ({c!r}, {val}),\n")
        w("    ],\n")
    w("}\n\n")
    for name, t in h.callbacks.items():
        w(f"{name} = {t}\n")
    w("\n")
    for name, _ in h.structs:
        w(f"class {name}(Structure):\n    pass\n\n\n")
    for name, fields in h.structs:
        w(f"{name}._fields_ = [\n")
        for f, t in fields:
            w(f"    ({f!r}, {t}),\n")
        w("]\n")
    w("\nSTRUCTS = [" + ", ".join(n for n, _ in h.structs) + "]\n\n")
    w("# function -> (restype, argtypes)\nFUNCTIONS = {\n")
    for name, restype, args in h.functions:
        w(f"    {name!r}: ({restype}, [{', '.join(args)}]),\n")
    w("}\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: gen_cdefs.py include/infl.h > python/infl/_cdefs.py")
    with open(sys.argv[1], encoding="utf-8") as f:
        emit(Header(f.read()), sys.stdout)
