#!/usr/bin/env bash
# The supervised model's fit against scikit-learn's HistGradientBoostingClassifier, side by
# side on the same machine and the same feature table: ROWS labelled rows of
# tools/fraud_streams.py traffic (1 % fraud), the feature spec of the supervised tests
# (trainer/tests/data/streams-spec.toml: the legacy five and 13 velocity features), a later
# 41,000-row stream at 6 % to score both on.
#
# trainer: `trainer fit` with the spec (its `supervised = true`); the boosting time is the
# `supervised` line's. scikit-learn: tools/hgb_sklearn.py on `trainer features`' table of the
# same rows (the same velocity values), fitted on the first 80 % with the iteration count
# chosen on the last 20 %, as the trainer does.
# Usage: scripts/bench-supervised.sh [ROWS]     (default 1000000; needs scripts/setup.sh --tests)
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secureflow-edge/target}"
target=$CARGO_TARGET_DIR
# The build the tests use (one feature set: `-p trainer` alone would compile polars again).
cargo test --release --no-run 2>&1 | grep -v '^ *Executable' >&2
trainer="$target/release/trainer"
python=.venv/bin/python
spec=trainer/tests/data/streams-spec.toml
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
load() { cut -d' ' -f1-3 /proc/loadavg; }

"$python" tools/fraud_streams.py --rows "$rows" --fraud-rate 0.01 --seed 1 --profile a --output "$work/train.csv"
"$python" tools/fraud_streams.py --rows 41000 --fraud-rate 0.06 --seed 2 --profile a --output "$work/test.csv"
"$trainer" --log-format text features --input "$work/train.csv" --spec "$spec" --carry pattern --output "$work/ftrain.csv"
"$trainer" --log-format text features --input "$work/test.csv" --spec "$spec" --carry pattern --output "$work/ftest.csv"

echo "== trainer fit (forest + velocity features + supervised), load $(load)"
start=$(date +%s%N)
"$trainer" --log-format text fit --input "$work/train.csv" --spec "$spec" --seed 1 --output "$work/model.sfm" \
  | grep -E '^supervised|^  (block|review)|^wrote'
echo "trainer fit: $(( ($(date +%s%N) - start) / 1000000 )) ms wall in all (reading, velocity, forest, supervised, writing)"
"$trainer" --log-format text backtest --model "$work/model.sfm" --input "$work/test.csv" --spec "$spec" \
  | sed -n '3,4p'

echo "== scikit-learn HistGradientBoostingClassifier on the same table, load $(load)"
"$python" tools/hgb_sklearn.py --train "$work/ftrain.csv" --test "$work/ftest.csv" --max-iter 300 \
  | "$python" -c 'import json,sys; r=json.load(sys.stdin); print("sklearn %s: fit %.2f s + choosing the iteration count on the validation rows %.2f s = %.2f s (%d iterations fitted, %d kept), test ROC-AUC %.4f AP %.4f" % (r["sklearn"], r["fit_seconds"], r["select_seconds"], r["fit_seconds"] + r["select_seconds"], r["n_iter_fitted"], r["n_iter"], r["roc_auc"], r["average_precision"]))'
