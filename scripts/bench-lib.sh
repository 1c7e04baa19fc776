# Shared by the latency benchmarks (bench-predict.sh, bench-fraud-cost.sh): fresh servers in
# their own process groups, wrk on the same machine, the load average beside every figure.
# The caller sets: target (cargo target dir), component (the worker.wasm to serve), spin (a
# Spin CLI or empty), secs (seconds per run); optionally state_dir (spin up's, default $work/state). Sourcing makes $work (removed at exit), the wrk
# scripts predict.lua (POST $BENCH_BODY, default the legacy five) and get.lua, and $work/spin.toml.

work=$(mktemp -d)
pid=
stop() { [[ -n $pid ]] && { kill -TERM -- "-$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }; pid=; }
trap 'stop; rm -rf "$work"' EXIT

cat >"$work/predict.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = os.getenv("BENCH_BODY") or '{"amount": 42.5, "hour": 14, "day_of_week": 2, "merchant_category": 1, "transaction_type": 0}'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("p50 %6d us  p90 %6d us  p99 %6d us  p99.9 %6d us  %6.0f req/s  errors %d\n",
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    summary.requests / (summary.duration / 1e6), e.status + e.connect + e.read + e.write + e.timeout))
end
LUA
sed '/^wrk.method/,/^wrk.body/d' "$work/predict.lua" >"$work/get.lua"

rss_mb() { # RSS of a process group's members, MB
  ps -o rss= -g "$1" 2>/dev/null | awk '{s+=$1} END {printf "%d", s/1024}'
}

# start HOST FLAGS...: a fresh server in its own process group; sets $pid and $base.
start() {
  local host=$1; shift
  local log="$work/server.log"
  if [[ $host == harness || $host == floor ]]; then
    if [[ $host == harness ]]; then
      # spin.toml's stores as docs/edge.md's `spin up` has them: `default` on disk, `velocity` in memory.
      setsid "$target/release/harness" --component "$component" --listen 127.0.0.1:0 \
        --kv-store default --kv-store velocity --kv-memory velocity "$@" >"$log" 2>&1 &
    else
      setsid "$target/release/examples/http_floor" 127.0.0.1:0 >"$log" 2>&1 &
    fi
    pid=$!
    for _ in $(seq 1 600); do grep -q '^listening on ' "$log" && break; sleep 0.1; done
    base=$(sed -n 's/^listening on //p' "$log" | head -n1)
  else
    local state="${state_dir:-$work/state}"
    rm -rf "$state"
    # Spin's manifest, unchanged but for the component's path (spin up does not build);
    # written at each start, so a caller may switch $component between runs.
    sed "s#^source = .*#source = \"$component\"#" spin.toml >"$work/spin.toml"
    # The repository's runtime config, as docs/edge.md runs it (it declares the `velocity` store).
    setsid "$spin" up --from "$work/spin.toml" --listen 127.0.0.1:0 --state-dir "$state" \
      --runtime-config-file runtime-config.toml "$@" >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 1 1800); do grep -q '^Serving http://' "$log" && break; sleep 0.1; done
    base=$(sed -n 's#^Serving \(http://[^ ]*\).*#\1#p' "$log" | head -n1)
  fi
  [[ -n $base ]] || { cat "$log" >&2; exit 1; }
}

# measure HOST "FLAGS" CONNECTIONS PATH SCRIPT LABEL
measure() {
  local host=$1 flags=$2 c=$3 path=$4 script=$5 label=$6
  # shellcheck disable=SC2086
  start "$host" $flags
  local before; before=$(rss_mb "$pid")
  local threads=1; ((c > 1)) && threads=2
  local load; load=$(cut -d' ' -f1-3 /proc/loadavg)
  local result; result=$(wrk -t"$threads" -c"$c" -d"${secs}s" -s "$work/$script" "$base$path" | tail -n1)
  local during; during=$(rss_mb "$pid")
  sleep 3
  printf '  %-26s c=%-3d %s  rss %s/%s/%s MB  [load %s]\n' "$label" "$c" "$result" \
    "$before" "$during" "$(rss_mb "$pid")" "$load" | tee -a "$work/out.txt"
  # A run that errs or prints no summary is a failure, not a figure (0 errors is a goal).
  [[ $result =~ errors\ 0$ ]] || failed+=("$host $label c=$c")
  stop
}
failed=()
