#!/usr/bin/env bash
# What velocity features and rules cost per request, measured as a user would (a freshly started
# server per figure, wrk on the same machine, the load printed beside it): POST /api/predict at
# 1 and 16 connections, explained, for two components built side by side in one run —
#   off: the legacy five features, no policy;
#   on:  the same five + six velocity features by card_id (state in the `velocity` key-value
#        store, in memory as runtime-config.toml sets it) and a policy of three rules and a list;
#   plain: "on" with `velocity_writes = plain` (read, then write: what each update cost before
#        compare-and-swap), so the atomic path's own cost is on − plain, in the same run;
#   verified: "on" with `velocity_writes = verified` (every swap read back, as every atomic
#        write was before the default trusted the SQLite stores' refusals);
#   ticketed: "on" with `velocity_writes = ticketed` (writes in the order of tickets from the
#        store's atomic increment, no compare-and-swap): on Redis, in place of "on".
# Both models are fitted here on the same synthetic card stream; every request names one of
# 1,000 cards (so state is read and written for real) and carries no timestamp (edge clock).
# Under Spin twice: velocity state in Spin's in-memory store (runtime-config.toml, `spin`) and in
# a throwaway Redis (`spin+redis`, as deploy/runtime-config.redis.toml puts it in production).
# Usage: scripts/bench-velocity.sh [seconds per run, default 10] [harness|spin|both, default both]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
which_hosts="${2:-both}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secureflow-edge/target}"
target=$CARGO_TARGET_DIR
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
spin="${SFE_SPIN:-$HOME/.cache/secureflow-edge/bin/spin}"
[[ -x $spin ]] || spin=$(command -v spin || true)

cargo test --release --no-run 2>&1 | grep -v '^ *Executable' >&2
work=$(mktemp -d)
pid=
redis=
stop() { [[ -n $pid ]] && { kill -TERM -- "-$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }; pid=; }
trap 'stop; [[ -n $redis ]] && kill "$redis" 2>/dev/null; rm -rf "$work"' EXIT

trainer="$target/release/trainer"
legacy=amount,hour,day_of_week,merchant_category,transaction_type
"$trainer" synth --patterns --rows 50000 --anomaly-rate 0.01 --seed 1 --output "$work/train.parquet" >/dev/null
cat >"$work/spec.toml" <<'TOML'
[[velocity]]
name = "card_count_2m"
definition = "count by card_id over 2m every 12s"
[[velocity]]
name = "card_count_10m"
definition = "count by card_id over 10m"
[[velocity]]
name = "card_count_1h"
definition = "count by card_id over 1h"
[[velocity]]
name = "card_log_seconds_since_last"
definition = "log(seconds_since_last) by card_id"
[[velocity]]
name = "card_log_amount_ratio_30d"
definition = "log(amount / mean(amount)) by card_id over 30d every 1d"
[[velocity]]
name = "card_categories_24h"
definition = "distinct(merchant_category) by card_id over 24h every 1h"
TOML
cat >"$work/policy.toml" <<'TOML'
[lists]
blocked_cards = ["card-00007", "card-00042"]
[[rule]]
name = "blocked_card"
when = "card_id in blocked_cards"
outcome = "block"
[[rule]]
name = "card_testing"
when = "card_count_10m >= 3 and amount < 5"
outcome = "block"
[[rule]]
name = "burst"
when = "card_count_10m >= 4"
outcome = "review"
TOML
"$trainer" fit --input "$work/train.parquet" --features $legacy --output "$work/off.sfm" >/dev/null
"$trainer" fit --input "$work/train.parquet" --features $legacy --spec "$work/spec.toml" --output "$work/on.sfm" >/dev/null
for v in off on; do
  SFE_MODEL_PATH="$work/$v.sfm" cargo build --release --target wasm32-wasip2 -p worker --target-dir "$target/bench-velocity" 2>&1 | tail -n1 >&2
  cp "$target/bench-velocity/wasm32-wasip2/release/worker.wasm" "$work/$v.wasm"
done

cat >"$work/predict.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"amount": %.2f, "hour": 14, "day_of_week": 2, "merchant_category": %d, "transaction_type": 0, "card_id": "card-%05d"}',
    5 + (n * 7919) % 400, n % 8, (n * 104729) % 1000)
  return wrk.format(nil, nil, nil, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("p50 %6d us  p90 %6d us  p99 %6d us  p99.9 %6d us  %6.0f req/s  errors %d\n",
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    summary.requests / (summary.duration / 1e6), e.status + e.connect + e.read + e.write + e.timeout))
end
LUA

# The policy where each host's `default` store keeps it: the harness's files, Spin's SQLite.
hex=$(printf 'policy/current' | od -An -tx1 | tr -d ' \n')
start() { # start HOST VARIANT: a fresh server; sets $pid and $base
  local host=$1 v=$2 log="$work/server.log"
  local wasm=$work/on.wasm writes=atomic
  [[ $v == off ]] && wasm=$work/off.wasm
  [[ $v == plain || $v == verified || $v == ticketed ]] && writes=$v
  rm -rf "$work/state"; mkdir -p "$work/state/default"
  if [[ $host == harness ]]; then
    [[ $v != off ]] && cp "$work/policy.toml" "$work/state/default/k$hex"
    # The harness grants spin.toml's variables, SPIN_VARIABLE_* overriding them, as Spin does.
    SPIN_VARIABLE_VELOCITY_WRITES=$writes setsid "$target/release/harness" --component "$wasm" --listen 127.0.0.1:0 \
      --kv-dir "$work/state" --kv-store default --kv-store velocity --kv-memory velocity >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 1 600); do grep -q '^listening on ' "$log" && break; sleep 0.1; done
    base=$(sed -n 's/^listening on //p' "$log" | head -n1)
  else
    [[ $v != off ]] && python3 - "$work/state/sqlite_key_value.db" "$work/policy.toml" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("CREATE TABLE IF NOT EXISTS spin_key_value (store TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (store, key))")
db.execute("INSERT INTO spin_key_value VALUES ('default', 'policy/current', ?)", (open(sys.argv[2], 'rb').read(),))
db.commit()
PY
    sed "s#^source = .*#source = \"$wasm\"#" spin.toml >"$work/spin.toml"
    local config=runtime-config.toml
    if [[ $host == spin+redis ]]; then
      config="$work/runtime-config.redis.toml"
      redis-cli -p "$redis_port" flushall >/dev/null
    fi
    SPIN_VARIABLE_VELOCITY_WRITES=$writes setsid "$spin" up --from "$work/spin.toml" --listen 127.0.0.1:0 --state-dir "$work/state" \
      --runtime-config-file "$config" >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 1 1800); do grep -q '^Serving http://' "$log" && break; sleep 0.1; done
    base=$(sed -n 's#^Serving \(http://[^ ]*\).*#\1#p' "$log" | head -n1)
  fi
  [[ -n $base ]] || { cat "$log" >&2; exit 1; }
  # The policy must be in force for "on" (and absent for "off").
  local rules; rules=$(curl -s "$base/api/health" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("policy_rules"))')
  [[ ($v != off && $rules == 3) || ($v == off && $rules == 0) ]] || { echo "$host $v: policy_rules $rules" >&2; cat "$log" >&2; exit 1; }
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load $(cut -d' ' -f1-3 /proc/loadavg); ${secs} s per run"
hosts=()
[[ $which_hosts == spin ]] || hosts+=(harness)
[[ $which_hosts == harness || -z $spin ]] || hosts+=(spin)
if [[ " ${hosts[*]} " == *" spin "* ]] && command -v redis-server >/dev/null; then
  hosts+=(spin+redis)
  redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
  redis=$!
  printf '[key_value_store.velocity]\ntype = "redis"\nurl = "redis://127.0.0.1:%s"\n' "$redis_port" >"$work/runtime-config.redis.toml"
  for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
failed=()
for host in "${hosts[@]}"; do
  variants=(off plain verified on)
  # Spin's Redis store cannot compare-and-swap under load (deploy/spinapp.yaml: ticketed).
  [[ $host == spin+redis ]] && variants=(off plain ticketed)
  for c in 1 16; do
    for v in "${variants[@]}"; do
      start "$host" "$v"
      threads=1; ((c > 1)) && threads=2
      load=$(cut -d' ' -f1-3 /proc/loadavg)
      result=$(wrk -t"$threads" -c"$c" -d"${secs}s" -s "$work/predict.lua" "$base/api/predict" | tail -n1)
      printf '  %-10s velocity+rules %-8s c=%-3d %s  [load %s]\n' "$host" "$v" "$c" "$result" "$load"
      # A run that errs, answers nothing (a hung server: wrk then counts no error) or prints no
      # summary is a failure, not a figure.
      [[ $result =~ errors\ 0$ && ! $result =~ [[:space:]]0\ req/s ]] || failed+=("$host $v c=$c")
      stop
    done
  done
done
if ((${#failed[@]})); then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
