#!/usr/bin/env bash
# Copies the upstream reference files the eval benchmark runs into git-ignored .ref/ (from the
# read-only mirror of openai/parameter-golf). Run here before shipping .ref/ to a GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
mirror=${PGOLF_UPSTREAM_MIRROR:-/work/.mirror/openai+parameter-golf/repo}
mkdir -p .ref
git -C "$mirror" show HEAD:train_gpt.py > .ref/train_gpt.py
git -C "$mirror" show HEAD:records/track_10min_16mb/2026-03-19_SlidingWindowEval/train_gpt.py > .ref/sw_train_gpt.py
echo "eval_ref: .ref/train_gpt.py and .ref/sw_train_gpt.py from $(git -C "$mirror" rev-parse --short HEAD)"
