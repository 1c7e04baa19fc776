#!/usr/bin/env bash
# What the supervised model costs an explained prediction: two components built alike, one
# embedding a forest alone and one the same forest with its supervised model (GBDT section),
# both fitted by `trainer fit --seed 1` on the same independent labelled stream
# (tools/fraud_streams.py, 61,000 rows at 1 % fraud, the legacy five features). Per host (the
# harness, then `spin up`, with the recommended reuse flag) and per path (explained, then
# ?explain=false), both are started fresh side by side and measured in turns, A then B, for
# `rounds` turns of `secs` seconds at 1 connection: a change in the machine's speed hits both.
# Then the median p50 of the turns, and the median of the paired differences B − A.
# Goal (#27): explained p50 at most +30 µs.
# Usage: scripts/bench-fraud-cost.sh [seconds per turn, default 3] [turns, default 9]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-3}"
rounds="${2:-9}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secureflow-edge/target}"
target=$CARGO_TARGET_DIR
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
spin="${SFE_SPIN:-$HOME/.cache/secureflow-edge/bin/spin}"
[[ -x $spin ]] || spin=$(command -v spin || true)
component=
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

cargo test --release --no-run 2>&1 | grep -v '^ *Executable' >&2
.venv/bin/python tools/fraud_streams.py --rows 61000 --fraud-rate 0.01 --seed 1 --profile a \
  --output "$work/train.csv" >&2
features=amount,hour,day_of_week,merchant_category,transaction_type
for m in forest supervised; do
  flag=; [[ $m == supervised ]] && flag=--supervised
  # shellcheck disable=SC2086
  "$target/release/trainer" fit --input "$work/train.csv" --features "$features" --label label \
    --seed 1 $flag --output "$work/$m.sfm" >&2
  SFE_MODEL_PATH="$work/$m.sfm" cargo build --release --target wasm32-wasip2 -p worker 2>&1 | tail -n1 >&2
  cp "$target/wasm32-wasip2/release/worker.wasm" "$work/$m.wasm"
done
# The shipped component embeds data/model.sfm again.
cargo build --release --target wasm32-wasip2 -p worker 2>&1 | tail -n1 >&2

echo "machine: $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); ${secs} s per turn, ${rounds} turns, wrk -t1 -c1"
echo "A: forest alone ($(stat -c %s "$work/forest.sfm") bytes); B: forest + supervised ($(stat -c %s "$work/supervised.sfm") bytes)"
recommended="--max-instance-reuse-count 100000"
hosts=(harness)
[[ -n $spin ]] && hosts+=(spin)
servers=()
stop_all() { for g in "${servers[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done; servers=(); }
trap 'stop_all; stop; rm -rf "$work"' EXIT
p50() { awk '{for(i=1;i<=NF;i++) if($i=="p50") print $(i+1)}'; }
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
for host in "${hosts[@]}"; do
  for path in /api/predict "/api/predict?explain=false"; do
    declare -A url=()
    for m in forest supervised; do
      component="$work/$m.wasm" state_dir="$work/state-$m"
      # shellcheck disable=SC2086
      start "$host" $recommended
      servers+=("$pid"); url[$m]="$base$path"; pid=
      # Each server logs to server.log: keep the second from overwriting the first.
      mv "$work/server.log" "$work/server-$m.log"
    done
    : >"$work/turns.txt"
    for r in $(seq 1 "$rounds"); do
      for m in forest supervised; do
        load=$(cut -d' ' -f1-3 /proc/loadavg)
        result=$(wrk -t1 -c1 -d"${secs}s" -s "$work/predict.lua" "${url[$m]}" | tail -n1)
        [[ $result =~ errors\ 0$ ]] || failed+=("$host $m $path #$r")
        printf '  %-8s %-28s %-10s #%-2d %s  [load %s]\n' "$host" "$path" "$m" "$r" "$result" "$load" | tee -a "$work/turns.txt"
      done
    done
    stop_all
    a=$(grep -F " forest " "$work/turns.txt" | p50 | median)
    b=$(grep -F " supervised " "$work/turns.txt" | p50 | median)
    d=$(paste <(grep -F " forest " "$work/turns.txt" | p50) <(grep -F " supervised " "$work/turns.txt" | p50) | awk '{print $2 - $1}' | median)
    printf '%-8s %-28s median p50: A forest %d µs, B + supervised %d µs; median of the paired B − A: %+d µs\n' \
      "$host" "$path" "$a" "$b" "$d" | tee -a "$work/summary.txt"
  done
done
echo "summary:"; cat "$work/summary.txt"
if ((${#failed[@]})); then
  printf 'failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
