#!/usr/bin/env bash
# run.sh — runs the Python package's tests (pytest, python/tests) against a freshly built
# libinfl.so and infl CLI; ctest's python_test. Exits 77 (ctest: skipped) with the reason
# when python3, NumPy, pytest or h5py is missing. Under an ASan build the sanitizer runtimes
# are preloaded into Python (which is not instrumented), leak checks off (Python's own).
# Usage: run.sh LIBINFL_SO INFL_CLI SOURCE_DIR [pytest args...]
set -uo pipefail
lib=$1 cli=$2 src=$3
shift 3
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3 || true)
if [ -z "$py" ]; then echo "python_test: skipped: no python3 (apt-get install python3)"; exit 77; fi
for m in numpy pytest h5py; do
  if ! "$py" -c "import $m" 2>/dev/null; then
    echo "python_test: skipped: $py has no $m (apt-get install python3-numpy python3-pytest python3-h5py)"
    exit 77
  fi
done
export INFL_LIBRARY=$lib INFL_CLI=$cli INFL_SOURCE_DIR=$src PYTHONPATH=$src/python${PYTHONPATH:+:$PYTHONPATH}
export PYTHONDONTWRITEBYTECODE=1
if [ "${INFL_SANITIZE:-OFF}" = "ON" ]; then
  asan=$(${CC:-cc} -print-file-name=libasan.so) ubsan=$(${CC:-cc} -print-file-name=libubsan.so)
  export LD_PRELOAD="$asan $ubsan" ASAN_OPTIONS=detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}
fi
exec "$py" -m pytest -q -p no:cacheprovider "$src/python/tests" "$@"
