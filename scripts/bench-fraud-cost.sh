#!/usr/bin/env bash
# What the supervised model costs an explained prediction: two components built alike, one
# embedding a forest alone and one the same forest with its supervised model (GBDT section),
# both fitted by `trainer fit --seed 1` on the same independent labelled stream
# (tools/fraud_streams.py, 61,000 rows at 1 % fraud, the legacy five features). Each round
# starts a fresh server for A, measures, stops it, then the same for B (alternating, so a
# change in the machine's load hits both), at 1 connection, explained and ?explain=false,
# under the harness and `spin up` with the recommended reuse flag; then the median p50 of the
# rounds and the difference B − A. Goal (#27): explained p50 at most +30 µs.
# Usage: scripts/bench-fraud-cost.sh [seconds per run, default 5] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-5}"
rounds="${2:-3}"
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

echo "machine: $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); ${secs} s per run, ${rounds} rounds, wrk -t1 -c1"
echo "A: forest alone ($(stat -c %s "$work/forest.sfm") bytes); B: forest + supervised ($(stat -c %s "$work/supervised.sfm") bytes)"
recommended="--max-instance-reuse-count 100000"
hosts=(harness)
[[ -n $spin ]] && hosts+=(spin)
for host in "${hosts[@]}"; do
  for path in /api/predict "/api/predict?explain=false"; do
    for r in $(seq 1 "$rounds"); do
      for m in forest supervised; do
        component="$work/$m.wasm"
        measure "$host" "$recommended" 1 "$path" predict.lua "$host $m $path #$r"
      done
    done
  done
done
echo "median p50 over the rounds (µs): A forest, B + supervised, B − A"
for host in "${hosts[@]}"; do
  for path in /api/predict "/api/predict?explain=false"; do
    med() { grep -F "$host $1 $path #" "$work/out.txt" | awk '{for(i=1;i<=NF;i++) if($i=="p50") print $(i+1)}' | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
    a=$(med forest); b=$(med supervised)
    printf '  %-8s %-28s A %5d  B %5d  B−A %+5d\n' "$host" "$path" "$a" "$b" "$((b - a))"
  done
done
if ((${#failed[@]})); then
  printf 'failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
