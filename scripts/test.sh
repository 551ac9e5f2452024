#!/usr/bin/env bash
# README command 2: set up, then run every test (unit tests and end-to-end tests of the real stage
# binaries). CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --release --workspace "$@"
