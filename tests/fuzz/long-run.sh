#!/usr/bin/env bash
# long-run.sh MINUTES [HARNESS...] — the documented long fuzz run (README "Fuzzing").
#
# Builds build-fuzz (clang, INFL_FUZZ=ON) with the raw-bytes harnesses, makes the seed
# corpora, then runs each harness for MINUTES minutes, two at a time, under nice, in
# libFuzzer's fork mode (a crash is saved and the run goes on). HARNESS: idx csv text
# tok dataset run factors scores lds index info (the default: all of them), or raw-dataset ...
# raw-info (the input is the HDF5 file's bytes: libhdf5's parser is fuzzed too), or
# `raw` for the six raw ones. The corpora persist in build-fuzz/fuzz-long/<harness>/
# corpus, so runs add up. Unlike the smoke runs, allocations of 512 MiB or more are
# findings here (-malloc_limit_mb), not out-of-memory errors.
#
# Triage: each saved input is run again and its report kept beside it (.txt); it is
# sorted into ours/ when the first frame that is ours (host/, tests/fuzz/) or libhdf5's
# is ours, into hdf5/ when it is libhdf5's (libhdf5 1.10.8 crashes on many corrupt
# files by itself: heap overflows, use-after-free in H5A/H5O/H5C). The stack looked at
# is the one that allocated the memory at fault when ASan reports one (our buffer that
# libhdf5 overran in H5Dread is ours), else the fault's. Read hdf5/ too: a wrong
# argument of ours can crash inside libhdf5. An input that does not fail when replayed
# alone goes to flaky/. Last, a table: minutes, executions, mean executions per second,
# corpus, findings per harness.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
minutes=${1:?usage: long-run.sh MINUTES [HARNESS...]}
shift
all=(idx csv text tok dataset run factors scores lds index info)
raw=(raw-dataset raw-run raw-factors raw-scores raw-lds raw-index raw-info)
hs=()
for h in "${@:-${all[@]}}"; do
  if [ "$h" = raw ]; then hs+=("${raw[@]}"); else hs+=("$h"); fi
done
build=$root/build-fuzz
out=$build/fuzz-long
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S "$root" -B "$build" -DINFL_FUZZ=ON -DCMAKE_C_COMPILER=clang-14 -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
targets=()
for h in "${hs[@]}"; do targets+=("fuzz_${h//-/_}"); done
nice -n 10 cmake --build "$build" -j 2 --target fuzz_seeds "${targets[@]}" >/dev/null
mkdir -p "$out"
[ -d "$out/seeds/idx" ] || OMP_NUM_THREADS=1 "$build/tests/fuzz/fuzz_seeds" "$out/seeds" >/dev/null

export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
export LSAN_OPTIONS="suppressions=$root/tests/fuzz/lsan.supp"
export ASAN_OPTIONS="detect_leaks=1:malloc_context_size=30"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

# one harness: fork mode for MINUTES, then triage of what it saved
run_one() {
  local h=$1 bin=$build/tests/fuzz/fuzz_${1//-/_} seeds
  seeds=$out/seeds/${h#raw-}
  [ "${h#raw-}" != "$h" ] && seeds=$out/seeds/raw/${h#raw-}
  local d=$out/$h
  mkdir -p "$d/corpus" "$d/found" "$d/ours" "$d/hdf5" "$d/flaky"
  nice -n 10 "$bin" -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
    -max_total_time="$(awk "BEGIN { print int($minutes * 60) }")" -timeout=30 -rss_limit_mb=2048 -malloc_limit_mb=512 \
    -artifact_prefix="$d/found/" "$d/corpus" "$seeds" >"$d/run.log" 2>&1 || true
  for f in "$d"/found/*; do
    [ -f "$f" ] || continue
    case "$f" in *.txt) continue ;; esac
    "$bin" -timeout=30 -rss_limit_mb=2048 -malloc_limit_mb=512 "$f" >"$f.txt" 2>&1 || true
    # the first frame that is libhdf5's or ours decides: of the stack that allocated
    # the memory at fault when ASan names one (a buffer of ours that libhdf5 overruns in
    # H5Dread is ours), else of the stack of the fault
    local first report
    if grep -q 'allocated by thread' "$f.txt"; then
      report=$(sed -n '/allocated by thread/,$p' "$f.txt")
    else
      report=$(cat "$f.txt")
    fi
    first=$(grep -E '^ +#[0-9]+ ' <<<"$report" | grep -oE 'libhdf5[^ )]*|/host/[^ :]+\.[ch]:|/tests/fuzz/[^ :]+\.[ch]:' |
      head -1 || true)
    if ! grep -qE 'ERROR|runtime error|^fuzz: ' "$f.txt"; then
      mv "$f" "$f.txt" "$d/flaky/"  # no failure when replayed alone (libhdf5's state of the run)
      continue
    fi
    case "$first" in
      libhdf5*) mv "$f" "$f.txt" "$d/hdf5/" ;;
      *) mv "$f" "$f.txt" "$d/ours/" ;;
    esac
  done
}

# the temporary files of harness processes that crashed (atexit did not run), and
# libomp's registration files of those processes, under /dev/shm (fuzzutil.c, fz_tmp)
clean_tmp() {
  local f p
  for f in /dev/shm/infl-fuzz-* /dev/shm/__KMP_REGISTERED_LIB_*; do
    [ -e "$f" ] || continue
    p=$(basename "$f" | grep -oE '[0-9]+' | head -1)
    [ -n "$p" ] && ! kill -0 "$p" 2>/dev/null && rm -f "$f"
  done
  return 0
}
trap clean_tmp EXIT

# two at a time
i=0
for h in "${hs[@]}"; do
  run_one "$h" &
  i=$((i + 1))
  if [ $((i % 2)) -eq 0 ]; then
    wait
    clean_tmp
  fi
done
wait
clean_tmp

printf '| harness | minutes | executions | exec/s | corpus | ours | libhdf5 | flaky |\n|---|---|---|---|---|---|---|---|\n'
for h in "${hs[@]}"; do
  d=$out/$h
  # fork mode's progress lines: "#EXECS: cov: ... exec/s R ... time: Ss ..."; the mean rate
  last=$(grep -E '^#[0-9]+: cov' "$d/run.log" | tail -1 || true)
  execs=$(sed -E 's/^#([0-9]+):.*/\1/' <<<"$last")
  secs=$(grep -oE ' time: [0-9]+s' <<<"$last" | grep -oE '[0-9]+' || true)
  rate=$([ -n "$execs" ] && [ -n "$secs" ] && [ "$secs" -gt 0 ] && echo $((execs / secs)) || echo '?')
  corpus=$(find "$d/corpus" -type f | wc -l)
  ours=$(find "$d/ours" -type f ! -name '*.txt' | wc -l)
  hdf5=$(find "$d/hdf5" -type f ! -name '*.txt' | wc -l)
  flaky=$(find "$d/flaky" -type f ! -name '*.txt' | wc -l)
  printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$h" "$minutes" "${execs:-?}" "${rate:-?}" "$corpus" "$ours" \
    "$hdf5" "$flaky"
done
