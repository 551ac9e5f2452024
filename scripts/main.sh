#!/usr/bin/env bash
# README command 1: set up, then run the default pipeline (profile cpu-smoke: synthetic corpus on the
# CPU, every stage through to the report). Extra arguments go to `pipeline run`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec target/release/pipeline run "$@"
