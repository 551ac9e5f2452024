#!/usr/bin/env bash
# Tokenize throughput: the Rust `tokenize` stage vs Python sentencepiece on one wiki part (sp1024).
#
#   bench/tokenize.sh [PART]          # PART defaults to ../shared/data/enwiki2015/part-00.parquet
#
# Measures, each on the same Parquet file and tokenizer:
#   rust-stage     `tokenize` end to end (read Parquet, encode on all cores, write shards + doc
#                  table + manifest); also with RAYON_NUM_THREADS=1. Wall and CPU (user + sys) time
#                  of the process, by /usr/bin/time.
#   python-encode  `sp.encode(texts, num_threads=N)` for N = 2 and 1: wall and process CPU time of
#                  the encode call only (the Parquet read by pyarrow is timed separately, reported).
# On a shared machine wall time depends on the load (printed before and after); CPU seconds per MB
# measure the work done and depend on it far less.
# MB = 10^6 bytes of UTF-8 text. Needs `cargo build --release -p tokenize` and .venv (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
part=${1:-../shared/data/enwiki2015/part-00.parquet}
model=../shared/tokenizers/fineweb_1024_bpe.model
work=bench/.work/tokenize
rm -rf "$work" && mkdir -p "$work"
echo '{"val_docs": 100}' > "$work/params.json"

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
mb=$(.venv/bin/python -c "import pyarrow.parquet as pq,sys; print(sum(len(t.encode()) for t in pq.read_table(sys.argv[1], columns=['text']).column('text').to_pylist())/1e6)" "$part")
echo "input: $part, ${mb} MB of text"

rust() {  # label, then env assignments
  local label=$1; shift
  local out="$work/out-$label"
  /usr/bin/time -f "%e %U %S" -o "$work/time-$label" env "$@" target/release/tokenize --out "$out" \
    --params "$work/params.json" --in documents="$part" --in tokenizer="$model"
  .venv/bin/python - "$work/time-$label" "$out/manifest.json" "$label" "$mb" <<'PY'
import json, sys
wall, user, system = map(float, open(sys.argv[1]).read().split())
h = json.load(open(sys.argv[2]))["headline"]
mb = float(sys.argv[4])
print(f"| rust-stage {sys.argv[3]} | {wall:.2f} | {mb / wall:.2f} | {user + system:.2f} | {mb / (user + system):.2f} | {h['train_tokens'] + h['val_tokens']} |")
PY
}

echo "| what | wall s | MB/s (wall) | CPU s | MB per CPU-s | tokens |"
echo "|---|---|---|---|---|---|"
rust threads=all RAYON_NUM_THREADS=
rust threads=1 RAYON_NUM_THREADS=1
for threads in 2 1; do
  .venv/bin/python - "$part" "$model" "$threads" <<'PY'
import sys, time
import pyarrow.parquet as pq, sentencepiece as spm
path, model, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0 = time.perf_counter()
texts = pq.read_table(path, columns=["text"]).column("text").to_pylist()
t1 = time.perf_counter()
sp = spm.SentencePieceProcessor(model_file=model)
w0, c0 = time.perf_counter(), time.process_time()
ids = sp.encode(texts, num_threads=threads)
wall, cpu = time.perf_counter() - w0, time.process_time() - c0
mb = sum(len(t.encode()) for t in texts) / 1e6
tokens = sum(len(x) for x in ids) + len(ids)  # + one BOS per document, as in the shards
print(f"| python-encode num_threads={threads} (pyarrow read {t1 - t0:.2f} s not included) | {wall:.2f} | {mb / wall:.2f} | {cpu:.2f} | {mb / cpu:.2f} | {tokens} |")
PY
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
