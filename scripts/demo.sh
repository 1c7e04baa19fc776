#!/usr/bin/env bash
# The main job, end to end: synthesize transactions -> train -> build the worker component with
# that model embedded -> serve it on localhost with the wasmtime harness -> print a prediction.
# Usage: scripts/demo.sh [--exit]     (--exit: stop after the sample instead of serving on)
# Env:   PORT (default 3000; 0 = any free port)
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"

# Times measured with .ci/run on a 2-core machine (docs/development.md, "Build times").
cat <<EOF
demo: what this does, and roughly how long it takes on a 2-core machine
  1. scripts/setup.sh: the Rust toolchain of rust-toolchain.toml + the wasm32-wasip2 target
     (seconds once installed; a download the first time)
  2. cargo test --release --no-run: build the workspace as the tests do. Almost all the time:
     cold, the whole demo takes 20-25 min (up to 36 min on a slow day); with a warm target
     directory, about 4 min
  3. synthesize 10,000 transactions and train a model (seed 42)
  4. build the worker component (wasm32-wasip2) with that model embedded
  5. serve it with the harness on 127.0.0.1:$( [ "${PORT:-3000}" = 0 ] && echo "<a free port>" || echo "${PORT:-3000}" ) and send two sample predictions
  (steps 3-5 are the small rest of the time above)

EOF
next_steps() {
  cat <<EOF

demo: what to try next
  - The same component under Spin (>= 4.1; scripts/setup.sh --tests installs one as
    ~/.cache/secureflow-edge/bin/spin), with the recommended flags (docs/edge.md):
      spin build && spin up --runtime-config-file runtime-config.toml --max-instance-reuse-count 100000
  - The trainer on your own data (Parquet/CSV/NDJSON, S3, postgres://; docs/trainer.md):
      $target/release/trainer fit --input your-data.parquet --output my-model.sfm --seed 42
      SFE_MODEL_PATH=my-model.sfm spin build
  - The tests: scripts/test.sh    The API, field by field: docs/api.md
EOF
}

scripts/setup.sh

# The same build as the README's test command (`cargo test --release`), so that the tests reuse
# it instead of compiling the dependencies again with other features; it includes the trainer
# and harness binaries.
echo "== build the workspace as the tests do (release)"
cargo test --release --no-run

echo "== synthesize 10,000 transactions and train (seed 42)"
"$target/release/trainer" synth --output data/transactions.csv --rows 10000 --seed 42
"$target/release/trainer" fit --input data/transactions.csv --output data/model.sfm \
  --n-estimators 100 --max-samples auto --contamination 0.1 --seed 42

echo "== build the worker component (wasm32-wasip2) with data/model.sfm embedded"
cargo build --release --target wasm32-wasip2 -p worker
ls -l "$target/wasm32-wasip2/release/worker.wasm"

echo "== serve it with the harness"
log=$(mktemp)
"$target/release/harness" --component "$target/wasm32-wasip2/release/worker.wasm" \
  --listen "127.0.0.1:${PORT:-3000}" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 300); do
  grep -q '^listening on ' "$log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
base=$(sed -n 's/^listening on //p' "$log" | head -n1)
[ -n "$base" ] || { cat "$log" >&2; echo "harness did not start" >&2; exit 1; }
echo "listening on $base"

echo "== GET $base/api/health"
curl -sS --fail-with-body "$base/api/health"; echo
echo "== POST $base/api/predict (an ordinary purchase, then a 3 a.m. transfer of 4,800)"
curl -sS --fail-with-body -H 'content-type: application/json' \
  -d '{"amount": 42.5, "hour": 14, "day_of_week": 2, "merchant_category": 1, "transaction_type": 0}' \
  "$base/api/predict"; echo
curl -sS --fail-with-body -H 'content-type: application/json' \
  -d '{"amount": 4800, "hour": 3, "day_of_week": 6, "merchant_category": 9, "transaction_type": 2}' \
  "$base/api/predict"; echo

next_steps
if [ "${1:-}" = "--exit" ]; then exit 0; fi
echo "serving on $base until Ctrl-C (try: curl -s $base/api/health)"
wait "$pid"
