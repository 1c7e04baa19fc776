#!/usr/bin/env bash
# Trainer speed vs scikit-learn, side by side, on the same 1M-row Parquet file:
#   fit   = read -> StandardScaler -> IsolationForest(100 trees, ψ=256) -> threshold at
#           contamination 0.1 (scores every training row) -> write the model
#   score = read -> score all rows -> write the scores (Parquet)
# Ours: `trainer fit` / `trainer score`, timed as whole processes (and with SFE_TIMINGS=1, the
# fit phases on stderr). scikit-learn: tools/bench_sklearn.py, timed in-process and as a whole
# process (interpreter start and imports included). Prints figures; asserts nothing.
# Usage: scripts/bench-trainer.sh [ROWS]   (default 1000000)
# Env:   TRAINER (a trainer binary to use instead of building one), CARGO_TARGET_DIR (default target), BENCH_DIR (default a temporary directory),
#        RUNS (default 3: each figure is the best of RUNS runs)
set -euo pipefail
cd "$(dirname "$0")/.."
rows="${1:-1000000}"
runs="${RUNS:-3}"
target="${CARGO_TARGET_DIR:-target}"
py=.venv/bin/python
[ -x "$py" ] || { echo "no $py: run scripts/setup.sh --tests first" >&2; exit 1; }
dir="${BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$dir"
[ -n "${BENCH_DIR:-}" ] || trap 'rm -rf "$dir"' EXIT

if [ -n "${TRAINER:-}" ]; then
  trainer=$TRAINER
else
  cargo test --release --no-run >&2
  trainer="$target/release/trainer"
fi
data="$dir/bench-$rows.parquet"
[ -f "$data" ] || "$trainer" synth --output "$data" --rows "$rows" --seed 7 >&2

# "wall cpu" seconds of a command, from the run with the best wall time of $runs (output in
# $dir/last.out). cpu = user + sys: on a busy shared machine, the fairer figure.
wall() {
  local best="" cpu=""
  for _ in $(seq "$runs"); do
    /usr/bin/time -f '%e %U %S' -o "$dir/time.out" "$@" >"$dir/last.out" 2>&1 \
      || { cat "$dir/last.out" >&2; return 1; }
    read -r w u s <"$dir/time.out"
    if [ -z "$best" ] || awk -v a="$w" -v b="$best" 'BEGIN { exit !(a < b) }'; then
      best=$w
      cpu=$(awk -v u="$u" -v s="$s" 'BEGIN { print u + s }')
    fi
  done
  printf '%.2f %.2f\n' "$best" "$cpu"
}
# Best in-process figure `phase` printed by bench_sklearn.py over $runs runs.
py_phase() {
  local phase=$1; shift
  local best=""
  for _ in $(seq "$runs"); do
    "$py" tools/bench_sklearn.py "$@" >"$dir/py.out"
    best=$(awk -v a="$best" -v p="$phase" '$1 == p { b = $2 } END { print (a == "" || b < a) ? b : a }' "$dir/py.out")
  done
  printf '%.3f' "$best"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1fx", a / b }'; }

echo "== $rows rows x 5 features ($(du -h "$data" | cut -f1) Parquet), $(nproc) cores, best of $runs"
echo "   $("$py" -c 'import sklearn, sys; print(f"scikit-learn {sklearn.__version__}, Python {sys.version.split()[0]}")')"

read -r ours_fit ours_fit_cpu < <(wall "$trainer" fit --input "$data" --output "$dir/ours.sfm" \
  --contamination 0.1 --n-estimators 100 --max-samples auto --seed 42)
SFE_TIMINGS=1 "$trainer" fit --input "$data" --output "$dir/ours.sfm" --contamination 0.1 \
  --n-estimators 100 --seed 42 2>"$dir/phases" >/dev/null
read -r sk_fit sk_fit_cpu < <(wall "$py" tools/bench_sklearn.py fit --input "$data" \
  --model "$dir/sk.pkl" --seed 42)
sk_fit_in=$(py_phase in-process fit --input "$data" --model "$dir/sk.pkl" --seed 42)

read -r ours_score ours_score_cpu < <(wall "$trainer" score --model "$dir/ours.sfm" \
  --input "$data" --output "$dir/ours-scores.parquet")
# The scoring step alone, beside scikit-learn's score_samples call: best of $runs.
ours_core=""
for _ in $(seq "$runs"); do
  SFE_TIMINGS=1 "$trainer" score --model "$dir/ours.sfm" --input "$data" \
    --output "$dir/ours-scores.parquet" 2>"$dir/score-phases" >/dev/null
  t=$(awk '$2 == "score" { v = $3 + 0; if ($3 ~ /ms$/) v /= 1000; else if ($3 ~ /µs$/) v /= 1e6; print v }' "$dir/score-phases")
  if [ -z "$ours_core" ] || awk -v a="$t" -v b="$ours_core" 'BEGIN { exit !(a < b) }'; then ours_core=$t; fi
done
read -r sk_score sk_score_cpu < <(wall "$py" tools/bench_sklearn.py score --input "$data" \
  --model "$dir/sk.pkl" --output "$dir/sk-scores.parquet")
sk_score_in=$(py_phase in-process score --input "$data" --model "$dir/sk.pkl" \
  --output "$dir/sk-scores.parquet")
sk_score_core=$(py_phase score score --input "$data" --model "$dir/sk.pkl" \
  --output "$dir/sk-scores.parquet")

echo
echo "seconds (best wall of $runs; cpu = user+sys of that run); x = scikit-learn / trainer"
printf '%-30s %8s %8s | %8s %8s %8s | %7s %7s %7s\n' "" "trainer" "cpu" "sklearn" "cpu" "in-proc" \
  "x wall" "x cpu" "x in-p"
row() {
  printf '%-30s %8s %8s | %8s %8s %8s | %7s %7s %7s\n' "$1" "$2" "$3" "$4" "$5" "$6" \
    "$(ratio "$4" "$2")" "$(ratio "$5" "$3")" "$(ratio "$6" "$2")"
}
row "fit (read..threshold..write)" "$ours_fit" "$ours_fit_cpu" "$sk_fit" "$sk_fit_cpu" "$sk_fit_in"
row "score $rows rows" "$ours_score" "$ours_score_cpu" "$sk_score" "$sk_score_cpu" "$sk_score_in"
echo "(sklearn in-proc: from read_parquet to the end, without interpreter start and imports)"
printf '%-30s %8.3f %8s | %8s %8s %8.3f | %7s %7s %7s\n' "scoring step alone" "$ours_core" "" "" "" \
  "$sk_score_core" "" "" "$(ratio "$sk_score_core" "$ours_core")"
echo "(scoring step: trainer's score phase (SFE_TIMINGS: scale, walk, normalise) vs forest.score_samples)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "trainer fit phases (SFE_TIMINGS=1, one run):"
sed 's/^/  /' "$dir/phases"
