#!/usr/bin/env bash
# The main job, end to end. First the shortest way to a prediction: build the worker component
# with the model committed in data/ and serve it with Spin (minutes). Then the rest: build
# everything (the trainer, and what the tests use), synthesize transactions, train a model from
# them (seed 42: it must equal data/model.sfm byte for byte), build the component with it and
# serve that.
# Usage: scripts/demo.sh [--exit]     (--exit: stop after the samples instead of serving on)
# Env:   PORT (default 3000; 0 = any free port)
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
port="${PORT:-3000}"
if [ "$port" = 0 ]; then
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
base="http://127.0.0.1:$port"

# Times measured on a 2-core machine (docs/development.md, "Build times").
cat <<EOF
demo: what this does, and roughly how long it takes on a 2-core machine
  1. scripts/setup.sh: the Rust toolchain of rust-toolchain.toml, the wasm32-wasip2 target and
     the Spin CLI (seconds once installed; a download the first time)
  2. build the worker component (wasm32-wasip2) with the committed data/model.sfm embedded and
     serve it with Spin on $base: two sample predictions (cold: about 4 min from the start)
  3. build everything else, as the tests do (cargo test --release --no-run): the trainer, the
     store, the harness, the test binaries. Cold: 20-25 min (up to 36 min on a slow day); with a
     warm target directory, seconds. Spin keeps serving meanwhile: try it with curl
  4. synthesize 10,000 transactions and train a model from them (seed 42), build the component
     with that model and serve it: the same bytes as data/model.sfm, so the same answers

EOF
next_steps() {
  cat <<EOF

demo: what to try next
  - The edge from this checkout, with the recommended flags (docs/edge.md):
      spin build && spin up --runtime-config-file runtime-config.toml --max-instance-reuse-count 100000
    (spin: $spin)
  - The trainer on your own data (Parquet/CSV/NDJSON, S3, postgres://; docs/trainer.md):
      $target/release/trainer fit --input your-data.parquet --output my-model.sfm --seed 42
      SFE_MODEL_PATH=my-model.sfm spin build
  - The tests: scripts/test.sh    The API, field by field: docs/api.md
EOF
}

scripts/setup.sh
spin="${SFE_SPIN:-$HOME/.cache/secureflow-edge/bin/spin}"
[[ -x $spin ]] || spin=$(command -v spin) || { echo "demo: no Spin CLI (scripts/setup.sh installs it from ../shared/tools/)" >&2; exit 1; }

work=$(mktemp -d)
pid=
# Spin runs in a process group of its own (setsid), stopped as a whole.
stop() { [[ -n $pid ]] && { kill -TERM -- "-$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }; pid=; }
trap 'stop; rm -rf "$work"' EXIT

build_component() {
  cargo build --release --target wasm32-wasip2 -p worker
  ls -l "$target/wasm32-wasip2/release/worker.wasm"
}

# Serves the component just built with `spin up`: the repository's spin.toml with the
# component's `source` pointed at it, the repository's runtime-config.toml (velocity state in
# memory), Spin's state in a scratch directory.
serve() {
  local wasm
  wasm=$(realpath "$target/wasm32-wasip2/release/worker.wasm")
  sed "s#^source = .*#source = \"$wasm\"#" spin.toml >"$work/spin.toml"
  setsid "$spin" up --from "$work/spin.toml" --listen "127.0.0.1:$port" \
    --runtime-config-file "$PWD/runtime-config.toml" --state-dir "$work/state" \
    --max-instance-reuse-count 100000 >"$work/spin.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    curl -sf "$base/api/health" >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/spin.log" >&2; exit 1; }
    sleep 0.2
  done
  curl -sf "$base/api/health" >/dev/null || { cat "$work/spin.log" >&2; echo "spin up did not start" >&2; exit 1; }
  echo "serving on $base ($("$spin" --version | cut -d' ' -f1-2))"
}

samples() {
  echo "== GET $base/api/health"
  curl -sS --fail-with-body "$base/api/health"; echo
  echo "== POST $base/api/predict (an ordinary purchase, then a 3 a.m. transfer of 4,800)"
  curl -sS --fail-with-body -H 'content-type: application/json' \
    -d '{"amount": 42.5, "hour": 14, "day_of_week": 2, "merchant_category": 1, "transaction_type": 0}' \
    "$base/api/predict"; echo
  curl -sS --fail-with-body -H 'content-type: application/json' \
    -d '{"amount": 4800, "hour": 3, "day_of_week": 6, "merchant_category": 9, "transaction_type": 2}' \
    "$base/api/predict"; echo
}

echo "== build the worker component (wasm32-wasip2) with the committed data/model.sfm"
build_component
echo "== serve it with spin up"
serve
samples
echo "demo: first prediction after $SECONDS s"
if [ "${1:-}" = "--exit" ]; then
  stop
else
  echo "demo: Spin keeps serving on $base while the rest builds"
fi

# The same build as the README's test command (`cargo test --release`), so that the tests reuse
# it instead of compiling the dependencies again with other features; it includes the trainer
# and harness binaries.
echo "== build everything else, as the tests do (release)"
cargo test --release --no-run

echo "== synthesize 10,000 transactions and train (seed 42)"
"$target/release/trainer" synth --output data/transactions.csv --rows 10000 --seed 42
"$target/release/trainer" fit --input data/transactions.csv --output data/model.sfm \
  --n-estimators 100 --max-samples auto --contamination 0.1 --seed 42

echo "== build the worker component with the model just trained, and serve it"
build_component
stop
serve
samples

next_steps
if [ "${1:-}" = "--exit" ]; then exit 0; fi
echo "serving on $base until Ctrl-C (try: curl -s $base/api/health)"
wait "$pid"
