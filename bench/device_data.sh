#!/usr/bin/env bash
# On the GPU machine: tokenizes the carried wiki parts with our tokenize stage and sp1024 into
# /tmp/pgolf-sbs/data (once per machine): val = all of part-07, train = all of part-00.
# Sourced by the bench scripts; unpacks the binaries (bench/device_unpack.sh: target/release/,
# LD_LIBRARY_PATH) and sets DATA.
set -euo pipefail
WORK=/tmp/pgolf-sbs
DATA=$WORK/data
mkdir -p "$WORK"
source bench/device_unpack.sh
if [ ! -f "$DATA/manifest.json" ]; then
  VAL_DOCS=$(python3 -c 'import pyarrow.parquet as pq; print(pq.ParquetFile(".device/data/part-07.parquet").metadata.num_rows)')
  echo "{\"val_docs\": $VAL_DOCS}" > "$WORK/tokenize.json"
  t0=$(date +%s)
  target/release/tokenize --out "$DATA" --in documents=.device/data/part-07.parquet --in documents=.device/data/part-00.parquet \
    --in tokenizer=.device/data/fineweb_1024_bpe.model --params "$WORK/tokenize.json"
  echo "tokenize: $(( $(date +%s) - t0 )) s; $(python3 -c "import json; print(json.load(open('$DATA/manifest.json'))['headline'])")"
fi
