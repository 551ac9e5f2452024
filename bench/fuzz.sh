#!/usr/bin/env bash
# Coverage-guided fuzzing of pgolf's file parsers (issue 14 item 6): each target of fuzz/ (the
# shard and sidecar readers, the artifact file and its body, manifests, bundle import,
# pipeline.yaml, tokenizer models) under libFuzzer for FUZZ_SECONDS (default 60) each, from seeds:
# fuzz/corpus/ plus the real files of this checkout's out/ (a cpu-smoke run of pipeline.yaml is
# made first when out/ has no artifact) and ../shared/tokenizers. Prints a table and writes it to
# target/fuzz-bench/table.md (and a summary row for scripts/reliability.sh when
# PGOLF_RELIABILITY_OUT is set). Exit status 1 when any target found a crash: its input is kept
# under target/fuzz-bench/<target>/ (crash-*, oom-*, timeout-*); fix it and copy it to
# fuzz/regressions/<target>/ with a regression test in the crate.
#
# Stable Rust: libFuzzer comes with the libfuzzer-sys crate (built by cc), and the coverage
# instrumentation is rustc's SanitizerCoverage pass, enabled by -Cpasses=sancov-module and LLVM
# flags that stable rustc accepts (the ones cargo-fuzz passes; no -Zsanitizer, so no ASan: Rust's
# own bounds and overflow checks are the detectors — debug assertions and overflow checks on).
# `--target HOST` keeps RUSTFLAGS off build scripts and proc macros, as cargo-fuzz does; the build
# has a target dir of its own (target/fuzz) so the instrumented crates never mix with release ones.
# Knobs: FUZZ_SECONDS, FUZZ_TARGETS (names), FUZZ_JOBS (cargo -j, default 2), FUZZ_KEEP_CORPUS=1
# (go on from the last run's corpus instead of the seeds alone).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-shard sidecar artifact artifact_body manifest bundle pipeline_yaml tokenizer_model}
work="$PWD/target/fuzz-bench"
mkdir -p "$work"
host=$(rustc -vV | sed -n 's/^host: //p')
start=$(date +%s)

export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
CARGO_TARGET_DIR=target/fuzz nice -n 10 cargo build --release -j "${FUZZ_JOBS:-2}" -p pgolf-fuzz \
  --features libfuzzer --bins --target "$host" >"$work/build.log" 2>&1 ||
  { tail -30 "$work/build.log"; exit 1; }
unset RUSTFLAGS
bins="target/fuzz/$host/release"
built=$(( $(date +%s) - start ))

# Seeds: the committed corpus, then real files (a cpu-smoke chain's out/ when there is none).
seeds="$work/seeds"
rm -rf "$seeds"
cp -r fuzz/corpus "$seeds"
if ! find out -name artifact.pgq 2>/dev/null | grep -q .; then
  nice -n 10 cargo build --release -j "${FUZZ_JOBS:-2}" -p pipeline -p tokenize -p train \
    -p ema-finalize -p gptq-calibrate -p quantize-pack -p ttt-eval -p ngram-eval -p report \
    >"$work/stages-build.log" 2>&1 || { tail -30 "$work/stages-build.log"; exit 1; }
  target/release/pipeline run >"$work/pipeline-run.log" 2>&1 ||
    { tail -20 "$work/pipeline-run.log"; exit 1; }
fi
nice -n 10 cargo run --release -q -j "${FUZZ_JOBS:-2}" -p pgolf-fuzz --example seeds -- "$seeds" "$PWD" \
  >"$work/seeds.log" 2>&1 || { tail -20 "$work/seeds.log"; exit 1; }

# Files in a folder (0 when there is none).
count() { if [ -d "$1" ]; then find "$1" -type f | wc -l; else echo 0; fi; }
status=0
rows=()
total_execs=0
open=0
for t in $targets; do
  dir="$work/$t"
  [ "${FUZZ_KEEP_CORPUS:-0}" = 1 ] || rm -rf "$dir"
  mkdir -p "$dir/corpus"
  cp "$seeds/$t"/* "$dir/corpus/"
  [ -d "fuzz/regressions/$t" ] && cp "fuzz/regressions/$t"/* "$dir/corpus/" 2>/dev/null || true
  nseeds=$(count "$dir/corpus")
  # -close_fd_mask=1: the importer's progress lines on stdout would only slow the loop.
  # A claimed 4 GiB artifact body is within the reader's MAX_BODY, hence the malloc limit.
  export PGOLF_FUZZ_SCRATCH="$(mkdir -p /dev/shm 2>/dev/null && echo /dev/shm || echo "$work")/pgolf-fuzz-bench-$$"
  "$bins/fuzz-${t//_/-}" "$dir/corpus" -max_total_time="$secs" -print_final_stats=1 \
    -artifact_prefix="$dir/" -close_fd_mask=1 -timeout=20 -rss_limit_mb=6000 \
    -malloc_limit_mb=6000 -max_len=1048576 >"$dir/log" 2>&1 || true
  rm -rf "$PGOLF_FUZZ_SCRATCH"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$dir/log" | tail -1)
  edges=$(sed -n 's/.*(\([0-9]*\) inline 8-bit counters).*/\1/p' "$dir/log" | sed -n 1p)
  last=$(grep -E '^#[0-9]+' "$dir/log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
  crashes=$(find "$dir" -maxdepth 1 \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' \) | wc -l)
  fixed=$(count "fuzz/regressions/$t")
  [ "$crashes" = 0 ] || { status=1; echo "CRASH: $t: see $dir/log and $dir/crash-*" >&2; grep -m3 -E 'panicked|ERROR' "$dir/log" >&2 || true; }
  total_execs=$(( total_execs + ${execs:-0} ))
  open=$(( open + crashes ))
  rows+=("| $t | ${execs:-?} | ${rate:-?} | ${cov:-?} of ${edges:-?} | ${ft:-?} | $nseeds → ${corp:-?} | $crashes | $fixed |")
done
secs_all=$(( $(date +%s) - start ))
{
  echo "fuzzing ($(date -u +%Y-%m-%d), $(nproc) cores, ${secs} s per target, build ${built} s, ${secs_all} s in all: FUZZ_SECONDS=$secs bench/fuzz.sh)"
  echo
  echo "| target | execs | execs/s | edges covered (of instrumented) | features | corpus (seeds → end) | crashes open | crashes fixed (fuzz/regressions) |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} >"$work/table.md"
cat "$work/table.md"
n=$(wc -w <<<"$targets")
if [ -n "${PGOLF_RELIABILITY_OUT:-}" ]; then
  mkdir -p "$PGOLF_RELIABILITY_OUT"
  cp "$work/table.md" "$PGOLF_RELIABILITY_OUT/fuzzing.md"
  fixed_all=$(count fuzz/regressions)
  echo "| coverage-guided fuzzing (libFuzzer) | $n parsers × ${secs} s, $total_execs execs | $open | crashes open $open; fuzzer crashes fixed and kept (fuzz/regressions, each a regression test): $fixed_all |" \
    >"$PGOLF_RELIABILITY_OUT/summary-10.row"
fi
exit $status
