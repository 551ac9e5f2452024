#!/usr/bin/env bash
# One GPU call that rechecks a structural change (issue 11) and the c10d path (issue 13):
#   1. train, 200 baseline steps (as bench/train_side_by_side.sh, OURS_ONLY): the previous
#      commit's binary (.device/old/train.gz, if carried and if it reads this tokenize's
#      manifests), this commit's, this commit's again — before/after and the run-to-run spread;
#   2. the chain on this commit's run: ema-finalize → quantize-pack (int8) → ttt-eval flat, the
#      small files of each run packed into $OUT/runs.tgz so the report can be built here from a
#      ttt-eval run made on the GPU;
#   3. c10d on one GPU: pgolf-dist-check through NCCL (PGOLF_DIST=c10d), and 60 steps of train as
#      one process and as a c10d/NCCL group of one (bit identity, ms/step overhead).
# Here: scripts/device-build.sh (and the old binary gzip'd into .device/old/train.gz); then
#   run(command="bash bench/gpu_recheck.sh", carry=[".device", ".ref"])
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0
source bench/device_data.sh >/dev/null
set +e   # (device_data.sh sets -e; each step below reports its own failure)
R=${OUT:-bench/.work/gpu_recheck}
W=/tmp/pgolf-recheck
mkdir -p "$R" "$W"
cp target/release/train "$W/train-new"
if [ -f .device/old/train.gz ]; then
  gunzip -c .device/old/train.gz > "$W/train-old" && chmod +x "$W/train-old"
fi

# 1. Before/after, then again.
summary() { python3 - "$1" "$2" <<'PY'
import json, sys
h = json.load(open(sys.argv[2]))["headline"]
print(f"| {sys.argv[1]} | {h['ms_per_step']:.1f} | {h['val_loss']:.4f} | {h['val_bpb']:.4f} | {h.get('peak_gpu_mib')} / {h.get('peak_gpu_reserved_mib')} |")
PY
}
echo '{"iterations": 200, "warmdown_iters": 100, "max_wallclock_seconds": 0.0, "val_loss_every": 0, "train_log_every": 50, "warmup_steps": 5}' > "$W/train.json"
echo "| run | ms/step | val_loss @200 | val_bpb @200 | peak MiB alloc / reserved |" > "$R/train_table.md"
echo "|---|---|---|---|---|" >> "$R/train_table.md"
for run in old new new2; do
  bin=$W/train-${run%2}
  [ -x "$bin" ] || continue
  rm -rf "$W/$run"
  timeout 200 "$bin" --out "$W/$run" --in data="$DATA" --params "$W/train.json" --device cuda > "$W/$run.txt" 2>&1 \
    && summary "$run" "$W/$run/manifest.json" >> "$R/train_table.md" || { echo "$run failed"; tail -3 "$W/$run.txt"; }
  sha256sum "$W/$run/model.safetensors" 2>/dev/null | cut -c1-16
done
cat "$R/train_table.md"

# 2. The chain on the new run, for the report.
target/release/ema-finalize --out "$W/ema" --in train="$W/new" > "$W/ema.txt" 2>&1 || tail -3 "$W/ema.txt"
target/release/quantize-pack --out "$W/q8" --in weights="$W/ema" > "$W/q8.txt" 2>&1 || tail -3 "$W/q8.txt"
echo '{"mode": "flat"}' > "$W/flat.json"
target/release/ttt-eval --out "$W/flat" --in artifact="$W/q8" --in data="$DATA" --params "$W/flat.json" --device cuda > "$W/flat.txt" 2>&1 || tail -3 "$W/flat.txt"
python3 -c "import json; h=json.load(open('$W/flat/manifest.json')); print('ttt-eval flat', h['headline'].get('val_bpb'), json.dumps(h.get('device', h.get('device_description'))))"
(cd "$W" && tar czf "$R/runs.tgz" --exclude='*.safetensors' --exclude='*.pgq' --exclude='*.bin' new ema q8 flat)

# 3. c10d on one GPU.
PGOLF_DIST=c10d timeout 60 target/release/pgolf-dist-check --device cuda 2>&1 | tail -15
echo '{"iterations": 60, "warmdown_iters": 30, "max_wallclock_seconds": 0.0, "val_loss_every": 0, "train_log_every": 0, "warmup_steps": 5, "val_max_tokens": 1048576}' > "$W/short.json"
for run in single nccl single2; do
  rm -rf "$W/$run"
  env $([ $run = nccl ] && echo PGOLF_DIST=c10d) timeout 120 target/release/train --out "$W/$run" --in data="$DATA" \
    --params "$W/short.json" --device cuda > "$W/$run.txt" 2>&1 || { echo "$run failed"; tail -3 "$W/$run.txt"; }
  python3 -c "import json; h=json.load(open('$W/$run/manifest.json'))['headline']; print('$run', 'ms/step %.2f' % h['ms_per_step'], 'val_bpb', h['val_bpb'], h.get('world_size'), h.get('dist_backend'))"
  sha256sum "$W/$run/model.safetensors" | cut -c1-16
done
