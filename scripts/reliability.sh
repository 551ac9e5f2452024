#!/usr/bin/env bash
# The reliability suite of issue 14, full counts, on this machine (2 cores: ~15 min): SIGKILL of
# every stage (50 each) and of the driver, concurrent drivers, gc during sweeps, a full disk and a
# read-only out/, lying memos, 187 bad inputs, numerical faults in train, and coverage-guided
# fuzzing of every parser (bench/fuzz.sh, FUZZ_SECONDS=30 each). Prints the summary table
# (and every detailed table) and leaves them in target/reliability/. CI runs the same tests with
# short counts as ordinary tests. Knobs: PGOLF_SEED, PGOLF_KILLS, PGOLF_DRIVER_KILLS,
# PGOLF_CONCURRENT_ROUNDS, PGOLF_KILL_WORKERS (tests/tests/reliability_support/mod.rs).
set -uo pipefail
cd "$(dirname "$0")/.."
out="$PWD/target/reliability"
rm -rf "$out" && mkdir -p "$out/tables"
export PGOLF_RELIABILITY=full PGOLF_RELIABILITY_OUT="$out/tables"
jobs="-j ${CARGO_JOBS:-2}"
start=$(date +%s)
nice -n 10 cargo build --release $jobs -p pipeline -p tokenize -p train -p ema-finalize \
  -p gptq-calibrate -p quantize-pack -p ttt-eval -p ngram-eval -p report -p pgolf-evaluator \
  -p pgolf-e2e --bins >"$out/build.log" 2>&1 || { tail -20 "$out/build.log"; exit 1; }
status=0
for t in reliability_kill reliability_concurrency reliability_faults reliability_inputs; do
  echo "== $t" >&2
  nice -n 10 cargo test --release $jobs -p pgolf-e2e --test "$t" -- --test-threads 1 --nocapture \
    >"$out/$t.log" 2>&1 || { status=1; echo "FAILED: $t (see $out/$t.log)" >&2; }
done
echo "== numerical_faults" >&2
if nice -n 10 cargo test --release $jobs -p train --test numerical_faults -- --test-threads 1 --nocapture \
  >"$out/numerical_faults.log" 2>&1; then
  lines=$(grep -oE '(NaN|max_loss): error: .*' "$out/numerical_faults.log" | sed 's/^[^:]*: //' | tr '\n' ' ')
  echo "| numerical faults (train) | a NaN loss, a loss above max_loss, 2 bad max_loss values | 0 | $lines|" >"$out/tables/summary-09.row"
else
  status=1; echo "FAILED: numerical_faults (see $out/numerical_faults.log)" >&2
fi
echo "== fuzzing" >&2
# Coverage-guided, FUZZ_SECONDS per parser (30 here; bench/fuzz.sh alone defaults to 60); it writes
# summary row 10 and its table into $PGOLF_RELIABILITY_OUT.
if ! FUZZ_SECONDS=${FUZZ_SECONDS:-30} bench/fuzz.sh >"$out/fuzz.log" 2>&1; then
  status=1; echo "FAILED: fuzzing (see $out/fuzz.log)" >&2
fi
secs=$(( $(date +%s) - start ))
{
  echo "# Reliability suite"
  echo
  echo "$(date -u +%Y-%m-%d), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), seed ${PGOLF_SEED:-14}, ${secs} s: scripts/reliability.sh"
  echo
  echo "| area | tried | wrong | notes |"
  echo "|---|---|---|---|"
  for i in 01 02 03 04 05 06 07 08 09 10; do
    if [ -f "$out/tables/summary-$i.row" ]; then cat "$out/tables/summary-$i.row"; else echo "| (row $i) | FAILED: see the logs in target/reliability/ | ? | |"; fi
  done
  echo
  for f in "$out"/tables/*.md; do [ -f "$f" ] && { cat "$f"; echo; }; done
} >"$out/summary.md.tmp"
mv "$out/summary.md.tmp" "$out/summary.md"
cat "$out/summary.md"
exit $status
