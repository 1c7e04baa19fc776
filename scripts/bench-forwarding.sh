#!/usr/bin/env bash
# POST /api/predict latency with write forwarding off vs on, side by side in one run: two
# harnesses serve the same release component on loopback, one without the store variables, one
# forwarding every scored transaction to the store service in front of a throwaway PostgreSQL
# cluster. Runs alternate (off, on, off, on) so machine noise hits both. Prints p50/p99 at 1
# connection (keep-alive) and req/s at 16 connections, then the rows that reached Postgres.
# Usage: scripts/bench-forwarding.sh [seconds per run, default 10]
# STORE_NICE=19 runs PostgreSQL and the store at low CPU priority: on this 2-core machine they
# otherwise compete with the edge for the same cores, which production (store far away) avoids.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
target="${CARGO_TARGET_DIR:-target}"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo test --release --no-run   # the build the tests and the demo use (no other feature set)
cargo build --release --target wasm32-wasip2 -p worker
component="$target/wasm32-wasip2/release/worker.wasm"

work=$(mktemp -d); pids=()
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  nice -n "${STORE_NICE:-0}" runuser -u "$(id -un)" -- true 2>/dev/null || true
as_pg nice -n "${STORE_NICE:-0}" "$pgbin/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/pg" "$work/kv"; chmod 755 "$work"
[ "$(id -u)" = 0 ] && chown -R postgres: "$work/pg"
as_pg "$pgbin/initdb" -D "$work/pg/data" -U postgres -A trust --no-sync >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg "$pgbin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
  -o "-p $port -k $work/pg -c listen_addresses=127.0.0.1" start >/dev/null
as_pg "$pgbin/createdb" -h 127.0.0.1 -p "$port" -U postgres secureflow

# Starts "$@" in the background, logging to $1.log, and prints the address it reports.
start() {
  local log="$work/$1.log"; shift
  "$@" >"$log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do grep -q '^listening on ' "$log" && break; sleep 0.1; done
  sed -n 's/^listening on //p' "$log" | head -n1 | grep . || { cat "$log" >&2; exit 1; }
}
token=bench-token-0123456789abcdef
store=$(start store nice -n "${STORE_NICE:-0}" "$target/release/store" --database-url "postgres://postgres@127.0.0.1:$port/secureflow" \
  --listen 127.0.0.1:0 --token "$token")
off=$(start off "$target/release/harness" --component "$component" --listen 127.0.0.1:0)
on=$(start on "$target/release/harness" --component "$component" --listen 127.0.0.1:0 \
  --var "store_url=http://$store" --var "store_token=$token" --kv-dir "$work/kv")

lua="$work/predict.lua"
cat >"$lua" <<'LUA'
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = '{"amount": 42.5, "hour": 14, "day_of_week": 2, "merchant_category": 1, "transaction_type": 0}'
done = function(summary, latency, requests)
  io.write(string.format("RESULT p50_us=%d p99_us=%d req_per_s=%.0f requests=%d errors=%d\n",
    latency:percentile(50), latency:percentile(99), summary.requests / (summary.duration / 1e6),
    summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
LUA
count() { as_pg "$pgbin/psql" -h 127.0.0.1 -p "$port" -U postgres -d secureflow -Atc "select count(*) from transactions"; }
for base in "$off" "$on"; do wrk -t2 -c16 -d2s -s "$lua" "$base/api/predict?explain=false" >/dev/null; done
sent=0
for round in 1 2; do
  for mode in "off|$off" "on|$on"; do
    name=${mode%%|*}; base=${mode#*|}
    r1=$(wrk -t1 -c1 -d"${secs}s" -s "$lua" "$base/api/predict?explain=false" | grep RESULT)
    r16=$(wrk -t2 -c16 -d"${secs}s" -s "$lua" "$base/api/predict?explain=false" | grep RESULT)
    echo "round $round, forwarding $name: 1 connection: ${r1#RESULT } | 16 connections: ${r16#RESULT }"
  done
done
# Rows forwarded: everything the "on" harness scored (warm-up included) ends up in Postgres.
sleep 3
echo "rows in Postgres after the runs: $(count)"
echo "outbox entries left: $(find "$work/kv" -type f -not -path '*/.tmp/*' | wc -l)"
grep -m3 -E "delivery failed|error|trap|panick" "$work/on.log" || true
