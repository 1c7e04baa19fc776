#!/usr/bin/env bash
# Batch explanations against shap: `trainer score --explain` and shap's TreeExplainer on the same
# scikit-learn IsolationForest (100 trees, psi 256), on ROWS rows of the legacy five
# (`trainer synth`) and on the widest ADBench set (cardio, 21 features, repeated to 200,000
# rows): rows/s of both, their ratio, the largest difference (tools/bench_explain_batch.py).
# Usage: scripts/bench-explain-batch.sh [ROWS]   (default 1000000; needs scripts/setup.sh --tests)
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secureflow-edge/target}"
target=$CARGO_TARGET_DIR
# The build the tests use (one feature set: `-p trainer` alone would compile polars again).
cargo test --release --no-run 2>&1 | grep -v '^ *Executable' >&2
.venv/bin/python tools/bench_explain_batch.py --trainer "$target/release/trainer" --rows "$rows" \
  --adbench ../shared/data/adbench/cardio.parquet
