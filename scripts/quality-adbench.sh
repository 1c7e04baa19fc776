#!/usr/bin/env bash
# Detection quality, trainer vs scikit-learn, on the ADBench data sets: for each Parquet file
# (f0..fN + label) and each seed, `trainer fit` (all f* columns, 100 trees, ψ=256) and
# `trainer score` on all rows, then tools/quality_sklearn.py fits scikit-learn's IsolationForest
# with the same settings and prints ROC-AUC and AP, mean ± sd over the seeds, for both.
# Usage: scripts/quality-adbench.sh [DATA_DIR]   (default ../shared/data/adbench)
# Env:   TRAINER (a trainer binary to use instead of building one), CARGO_TARGET_DIR (default target), SEEDS (default 0,1,2,3,4)
set -euo pipefail
cd "$(dirname "$0")/.."
data_dir="${1:-../shared/data/adbench}"
seeds="${SEEDS:-0,1,2,3,4}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secureflow-edge/target}"
target=$CARGO_TARGET_DIR
py=.venv/bin/python
[ -x "$py" ] || { echo "no $py: run scripts/setup.sh --tests first" >&2; exit 1; }
shopt -s nullglob
sets=("$data_dir"/*.parquet)
[ ${#sets[@]} -gt 0 ] || { echo "no Parquet files in $data_dir" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -n "${TRAINER:-}" ]; then
  trainer=$TRAINER
else
  # The build the tests use (one feature set: `-p trainer` alone would compile polars again).
  cargo test --release --no-run 2>&1 | grep -v '^ *Executable' >&2
  trainer="$target/release/trainer"
fi
for set in "${sets[@]}"; do
  name=$(basename "$set" .parquet)
  features=$("$py" -c 'import sys, pyarrow.parquet as pq
print(",".join(c for c in pq.read_schema(sys.argv[1]).names if c != "label"))' "$set")
  for seed in ${seeds//,/ }; do
    "$trainer" fit --input "$set" --output "$work/$name-seed$seed.sfm" --features "$features" \
      --n-estimators 100 --max-samples 256 --contamination auto --seed "$seed" >/dev/null
    "$trainer" score --model "$work/$name-seed$seed.sfm" --input "$set" \
      --output "$work/$name-seed$seed.parquet" >/dev/null
  done
done
"$py" tools/quality_sklearn.py --scores-dir "$work" --seeds "$seeds" "${sets[@]}"
