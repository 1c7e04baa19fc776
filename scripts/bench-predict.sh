#!/usr/bin/env bash
# Latency and throughput of POST /api/predict measured the way a user measures them: for every
# figure a freshly started server (no warm-up of ours), wrk on the same machine, the load average
# printed beside it. Each host (the wasmtime harness, and `spin up` when a Spin CLI is found) runs
# with Spin's default instance reuse and with the settings docs/edge.md recommends, at 1
# connection (explained and ?explain=false), 16 connections (both) and 150 connections
# (explained): p50/p90/p99/p99.9, req/s, errors, and the server's RSS before, at the end of the
# run and 3 s after it. Anchors in the same run: the model-format timings of one explanation and
# one score (bench_explain) natively and as WebAssembly under wasmtime (the component's compute),
# /api/health at 1 connection (the host's floor), and a plain hyper server with a constant body
# at 1, 16 and 150 connections (tests/examples/http_floor.rs: the machine's floor, what wrk,
# loopback, the kernel and the VM cost at that moment, with no WebAssembly at all).
# The table is also drawn as a chart (trainer/examples/bench_chart.rs), one panel per connection
# count, written to $BENCH_CHART (default $CARGO_TARGET_DIR/bench-predict.png).
# Before and after in one run: BENCH_BASELINE=<the cargo target directory of another checkout's
# release build> (its worker.wasm and bench_explain, native and wasm; docs/benchmarks.md says how
# to make one) adds that build's anchors, and measures its component right before this one's
# for every /api/predict line, on a fresh server each, labelled "(baseline)".
# Usage: scripts/bench-predict.sh [seconds per run, default 10] [harness|spin|both, default both]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
which_hosts="${2:-both}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secureflow-edge/target}"
target=$CARGO_TARGET_DIR
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }

# The build the tests and the demo use (one feature set, nothing compiled twice), then the component.
cargo test --release --no-run 2>&1 | grep -v '^ *Executable' >&2
cargo build --release --target wasm32-wasip2 -p worker 2>&1 | tail -n1 >&2
cargo build --release --target wasm32-wasip2 -p model-format --example bench_explain 2>&1 | tail -n1 >&2
component="$target/wasm32-wasip2/release/worker.wasm"
baseline="${BENCH_BASELINE:-}"
if [[ -n $baseline ]]; then
  for f in wasm32-wasip2/release/worker.wasm release/examples/bench_explain wasm32-wasip2/release/examples/bench_explain.wasm; do
    [[ -f $baseline/$f ]] || { echo "BENCH_BASELINE=$baseline: no $f (build it in that checkout)" >&2; exit 2; }
  done
fi
spin="${SFE_SPIN:-$HOME/.cache/secureflow-edge/bin/spin}"
[[ -x $spin ]] || spin=$(command -v spin || true)

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "component: $(stat -c %s "$component") bytes; model: $(stat -c %s data/model.sfm) bytes; ${secs} s per run, wrk -t1 at 1 connection, -t2 above"
# bench_explain's score and explain lines for data/model.sfm, on one line.
compute() { "$@" data/model.sfm 2>/dev/null | sed -n "/^data\/model.sfm/,\$p" | grep -E "^ +(score|explain) " | xargs || true; }
echo "anchor (model-format on data/model.sfm, native): $(compute "$target/release/examples/bench_explain")"
echo "anchor (the same as WebAssembly under wasmtime): $(compute "$target/release/examples/run_command" "$target/wasm32-wasip2/release/examples/bench_explain.wasm")"
if [[ -n $baseline ]]; then
  echo "anchor, baseline (native): $(compute "$baseline/release/examples/bench_explain")"
  echo "anchor, baseline (WebAssembly): $(compute "$target/release/examples/run_command" "$baseline/wasm32-wasip2/release/examples/bench_explain.wasm")"
fi
echo "floor (plain hyper server, constant body, no WebAssembly):" | tee -a "$work/out.txt"
for c in 1 16 150; do measure floor "" "$c" /api/predict predict.lua "floor"; done

# predict HOST FLAGS CONNECTIONS PATH LABEL: one /api/predict line, the baseline's first.
predict() {
  if [[ -n $baseline ]]; then
    local own=$component
    component="$baseline/wasm32-wasip2/release/worker.wasm"
    measure "$1" "$2" "$3" "$4" predict.lua "$5 (baseline)"
    component=$own
  fi
  measure "$1" "$2" "$3" "$4" predict.lua "$5"
}
# docs/edge.md ("Instance reuse"): instances kept rather than replaced every 128 requests.
recommended="--max-instance-reuse-count 100000"
hosts=()
[[ $which_hosts == spin ]] || hosts+=(harness)
if [[ $which_hosts != harness ]]; then
  if [[ -n $spin ]]; then hosts+=(spin); else echo "spin: no Spin CLI found (scripts/setup.sh --tests installs it); skipped"; fi
fi
for host in "${hosts[@]}"; do
  for cfg in "defaults|" "recommended|$recommended"; do
    name=${cfg%%|*}; flags=${cfg#*|}
    echo "$host, $name${flags:+ ($flags)}:" | tee -a "$work/out.txt"
    measure "$host" "$flags" 1 /api/health get.lua "health (anchor)"
    predict "$host" "$flags" 1 /api/predict "explained"
    predict "$host" "$flags" 1 "/api/predict?explain=false" "explain=false"
    predict "$host" "$flags" 16 /api/predict "explained"
    predict "$host" "$flags" 16 "/api/predict?explain=false" "explain=false"
    predict "$host" "$flags" 150 /api/predict "explained"
  done
done
chart="${BENCH_CHART:-$target/bench-predict.png}"
"$target/release/examples/bench_chart" "$work/out.txt" "$chart"
if ((${#failed[@]})); then
  printf 'failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
