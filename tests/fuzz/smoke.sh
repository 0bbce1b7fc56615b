#!/usr/bin/env bash
# smoke.sh HARNESS SEEDS WORK SECONDS — one harness's smoke run (a ctest test of the
# INFL_FUZZ build): libFuzzer from the seed corpus for SECONDS, new inputs into
# WORK/corpus, a crashing input into WORK/crash-*. Any crash, leak, sanitizer report,
# timeout (20 s an input) or allocation past the limits fails it (libFuzzer exits
# non-zero). Allocations past 512 MiB return NULL instead (infl reports out of memory):
# a size read from a file and allocated before it is checked is the `hostile` branch's
# to fix (issue #15), and is found as such by the long run (long-run.sh), not here.
set -euo pipefail
bin=$1 seeds=$2 work=$3 secs=$4
rm -rf "$work"
mkdir -p "$work/corpus"
export LSAN_OPTIONS="suppressions=$(dirname "$0")/lsan.supp:${LSAN_OPTIONS:-}"
export ASAN_OPTIONS="detect_leaks=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
exec "$bin" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$work/" "$work/corpus" "$seeds"
