#!/usr/bin/env bash
# Latency/throughput of POST /api/predict through the wasmtime harness on loopback, with wrk.
# Prints p50/p99 at 1 connection (keep-alive) and req/s at 16 connections, with the default
# exact TreeSHAP explanation and with ?explain=false.
# Usage: scripts/bench-predict.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
target="${CARGO_TARGET_DIR:-target}"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }

cargo test --release --no-run   # the build the tests and the demo use (no other feature set)
cargo build --release --target wasm32-wasip2 -p worker
echo "component: $(stat -c %s "$target/wasm32-wasip2/release/worker.wasm") bytes; model: $(stat -c %s data/model.sfm) bytes"

log=$(mktemp); lua=$(mktemp --suffix=.lua)
"$target/release/harness" --component "$target/wasm32-wasip2/release/worker.wasm" --listen 127.0.0.1:0 >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log" "$lua"' EXIT
for _ in $(seq 1 300); do grep -q '^listening on ' "$log" && break; sleep 0.1; done
base=$(sed -n 's/^listening on //p' "$log" | head -n1)
[ -n "$base" ] || { cat "$log" >&2; exit 1; }

cat >"$lua" <<'LUA'
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = '{"amount": 42.5, "hour": 14, "day_of_week": 2, "merchant_category": 1, "transaction_type": 0}'
done = function(summary, latency, requests)
  io.write(string.format("RESULT p50_us=%d p99_us=%d req_per_s=%.0f errors=%d\n",
    latency:percentile(50), latency:percentile(99), summary.requests / (summary.duration / 1e6),
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
LUA
# Warm up: fill the instance pool and the explanation tables.
wrk -t2 -c16 -d2s -s "$lua" "$base/api/predict" >/dev/null
for mode in "explain (default)|/api/predict" "explain=false|/api/predict?explain=false"; do
  name=${mode%%|*}; path=${mode#*|}
  echo "$name, 1 connection, keep-alive, ${secs}s:"; wrk -t1 -c1  -d"${secs}s" -s "$lua" "$base$path" | grep RESULT
  echo "$name, 16 connections, ${secs}s:";         wrk -t2 -c16 -d"${secs}s" -s "$lua" "$base$path" | grep RESULT
done
