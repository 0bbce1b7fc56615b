#!/usr/bin/env bash
# install_test.sh — `cmake --install` into a temporary prefix, then checks the installed
# tree as a user would see it: the files and the SONAME; that libinfl.so exports exactly
# the functions include/infl.h declares (nothing internal); that infl.h alone compiles
# (C11 pedantic, and as C++ when g++ is there); and that the consumer of tests/consumer
# builds and runs three ways — pkg-config against libinfl.so, CMake's find_package with
# infl::infl, and the static library (pkg-config --static, and infl::infl_static) —
# each printing the same lines. Usage: install_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
work=$(mktemp -d "${TMPDIR:-/tmp}/infl-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "install_test: FAIL: $*" >&2; exit 1; }
cc=${CC:-cc}
san=()
if [ "${INFL_SANITIZE:-OFF}" = "ON" ] || [ "${INFL_SANITIZE:-0}" = "1" ]; then
  san=(-fsanitize=address,undefined)   # the library is instrumented: so must the program be
fi

prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" >"$work/install.log"
version=$(sed -n 's/^project(infl VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
major=${version%%.*}
lib=$prefix/lib

# ---- the files ----
for f in "lib/libinfl.so.$version" lib/libinfl.a include/infl.h bin/infl lib/pkgconfig/infl.pc \
         lib/cmake/infl/inflConfig.cmake lib/cmake/infl/inflConfigVersion.cmake lib/cmake/infl/inflTargets.cmake; do
  [ -e "$prefix/$f" ] || fail "missing $f"
done
[ "$(readlink "$lib/libinfl.so")" = "libinfl.so.$major" ] || fail "libinfl.so does not link to libinfl.so.$major"
[ "$(readlink "$lib/libinfl.so.$major")" = "libinfl.so.$version" ] || fail "libinfl.so.$major does not link to libinfl.so.$version"
soname=$(readelf -d "$lib/libinfl.so.$version" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libinfl.so.$major" ] || fail "SONAME is '$soname', expected libinfl.so.$major"
headers=$(find "$prefix/include" -type f | wc -l)
[ "$headers" = 1 ] || fail "$headers files under include/, expected infl.h alone"
echo "installed: libinfl.so.$version (SONAME $soname), libinfl.a, include/infl.h, bin/infl, infl.pc, lib/cmake/infl"

# ---- exports: exactly the functions infl.h declares ----
# (The linker's own __bss_start, _edata, _end, which some links export, are not ours.)
# Declarations from the preprocessed header: drop brace blocks (struct and enum bodies),
# split into statements, drop typedefs; a statement's first `infl_xxx(` is a function.
"$cc" -E -P -x c "$prefix/include/infl.h" -o "$work/infl.i"
perl -0777 -ne '
  1 while s/\{[^{}]*\}//gs;
  for my $st (split /;/) { next if $st =~ /^\s*typedef\b/; print "$1\n" if $st =~ /\b(infl_\w+)\s*\(/; }
' "$work/infl.i" | sort -u >"$work/declared"
nm -D --defined-only "$lib/libinfl.so.$version" | awk '$2 ~ /^[TWDBRVi]$/ && $3 !~ /^(__bss_start|_edata|_end|_init|_fini)$/ {print $3}' | sed 's/@.*//' | sort -u >"$work/exported"
ndecl=$(wc -l <"$work/declared")
[ "$ndecl" -ge 50 ] || fail "only $ndecl functions parsed from infl.h"
if ! diff -u "$work/declared" "$work/exported" >"$work/exports.diff"; then
  cat "$work/exports.diff" >&2
  fail "libinfl.so's exports differ from infl.h's functions ('-': declared, not exported; '+': exported, not declared)"
fi
nm "$lib/libinfl.a" 2>/dev/null >"$work/archive.nm"
nm -D "$lib/libinfl.so.$version" >"$work/shared.nm"
for internal in infl_seterr store_run_open; do
  grep -q " T $internal\$" "$work/archive.nm" || fail "$internal is not in libinfl.a: the check below proves nothing"
  if grep -q " $internal\$" "$work/shared.nm"; then fail "libinfl.so exports the internal $internal"; fi
done
echo "exports: the $ndecl functions of infl.h, nothing else (infl_seterr, store_run_open stay inside)"

# ---- the header alone ----
printf '#include <infl.h>\nint main(void) { return infl_version_number() == INFL_VERSION_NUMBER ? 0 : 1; }\n' >"$work/h.c"
"$cc" -std=c11 -Wall -Wextra -pedantic -Werror -fsyntax-only -I"$prefix/include" "$work/h.c" \
  || fail "infl.h does not compile alone as C11"
if command -v g++ >/dev/null; then
  cp "$work/h.c" "$work/h.cpp"
  g++ -std=c++17 -Wall -Wextra -Werror -fsyntax-only -I"$prefix/include" "$work/h.cpp" \
    || fail "infl.h does not compile as C++"
fi

# ---- the consumer, three ways ----
awk 'BEGIN { print "x1,x2,y"; for (i = 0; i < 40; i++) { c = i % 2; s = (i * 37 % 11) / 11.0 - 0.5;
             printf "%.4f,%.4f,%d\n", (c ? 1.5 : -1.5) + s, (i * 13 % 7) / 7.0 - 0.5, c } }' >"$work/data.csv"
needs() {  # BINARY PATTERN: does its dynamic section name a NEEDED library matching PATTERN
  readelf -d "$1" >"$work/dyn.txt"
  grep -q "NEEDED.*$2" "$work/dyn.txt"
}
run_app() {  # NAME BINARY
  local out=$work/out.$1
  "$2" "$work" >"$out" || fail "$1: the consumer failed (exit $?)"
  grep -qx "version $version ($((${version%%.*} * 10000 + $(echo "$version" | cut -d. -f2) * 100 + ${version##*.})), header $version)" "$out" \
    || fail "$1: wrong version line: $(head -1 "$out")"
  grep -q "^missing file: INFL_E_IO (-3): .*missing.h5" "$out" || fail "$1: the failed call did not say INFL_E_IO with the file: $(tail -1 "$out")"
  grep -Eq "^eval: [1-9][0-9]* rows, .*accuracy 1.0000" "$out" || fail "$1: eval is not 100% on separable data: $(grep eval "$out")"
  cmp -s "$out" "$work/out.pkg-config" || { diff "$work/out.pkg-config" "$out" >&2; fail "$1 printed other lines than pkg-config's build"; }
  echo "$1: ok ($(grep '^eval' "$out"))"
}
export PKG_CONFIG_PATH=$lib/pkgconfig
# shellcheck disable=SC2046
"$cc" "${san[@]}" -o "$work/app.pc" "$src/tests/consumer/app.c" $(pkg-config --cflags --libs infl) -Wl,-rpath,"$lib" \
  || fail "pkg-config build"
needs "$work/app.pc" "\[libinfl.so.$major\]" || fail "pkg-config build does not link libinfl.so.$major"
"$work/app.pc" "$work" >"$work/out.pkg-config" || fail "pkg-config: the consumer failed"
run_app pkg-config "$work/app.pc"

# static: libinfl.a by -Bstatic, then what Libs.private names
libs_static=$(pkg-config --static --libs infl | sed 's/\(^\| \)-linfl\( \|$\)/ /')
# shellcheck disable=SC2086
"$cc" "${san[@]}" -o "$work/app.static" "$src/tests/consumer/app.c" $(pkg-config --cflags infl) \
  -Wl,-Bstatic -linfl -Wl,-Bdynamic $libs_static || fail "pkg-config --static build"
if needs "$work/app.static" libinfl; then fail "the static build needs libinfl.so"; fi
run_app pkg-config-static "$work/app.static"

cflags=""
[ ${#san[@]} -gt 0 ] && cflags="${san[*]}"
cmake -S "$src/tests/consumer" -B "$work/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_FLAGS="$cflags" >"$work/cmake.log" 2>&1 || { cat "$work/cmake.log" >&2; fail "the CMake consumer's configure"; }
cmake --build "$work/cmake-build" >"$work/cmake-build.log" 2>&1 || { cat "$work/cmake-build.log" >&2; fail "the CMake consumer's build"; }
needs "$work/cmake-build/app" "\[libinfl.so.$major\]" || fail "infl::infl does not link libinfl.so.$major"
run_app cmake-infl::infl "$work/cmake-build/app"
if needs "$work/cmake-build/app_static" libinfl; then fail "infl::infl_static needs libinfl.so"; fi
run_app cmake-infl::infl_static "$work/cmake-build/app_static"

# the installed CLI runs (static, with OpenBLAS's OpenMP build through its RPATH)
"$prefix/bin/infl" info "$work/data.h5" >"$work/info.txt" 2>&1 || { cat "$work/info.txt" >&2; fail "installed bin/infl info"; }
grep -q "dataset" "$work/info.txt" || fail "installed bin/infl info did not describe the dataset"
echo "install_test: ok"
