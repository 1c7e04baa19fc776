#!/usr/bin/env bash
# Runs every cargo-fuzz target of model-format for N executions each (default 100000) and
# prints, per target, the executions libFuzzer completed and the crashes it found.
# Exits non-zero if any target crashed (artifacts in fuzz/artifacts/<target>/).
#
#   model-format/fuzz/run.sh 200000
#
# Needs `cargo install cargo-fuzz` and a nightly toolchain. FUZZ_TARGET_DIR, if set, is passed
# to `cargo fuzz --target-dir` (default: fuzz/target).
set -uo pipefail

N="${1:-100000}"
cd "$(dirname "$0")/.." || exit 2   # cargo fuzz runs from the crate that holds fuzz/
TARGETS=(decode normalize)
LOGDIR="$(mktemp -d)"
failed=0

for t in "${TARGETS[@]}"; do
    # A scratch copy of the seed corpus, so the committed corpus only holds the seeds.
    work="$LOGDIR/corpus-$t"
    mkdir -p "$work"
    cp fuzz/corpus/"$t"/* "$work"/ 2>/dev/null || true
    log="$LOGDIR/$t.log"
    cargo +nightly fuzz run ${FUZZ_TARGET_DIR:+--target-dir "$FUZZ_TARGET_DIR"} "$t" "$work" -- -runs="$N" -print_final_stats=1 >"$log" 2>&1
    rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    secs=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
    crashes=$(grep -cE '^==[0-9]+== ERROR: libFuzzer|panicked at|SUMMARY: libFuzzer' "$log")
    # libFuzzer stops at the first crash, so each run finds 0 or 1; a failure we cannot
    # classify (build error, OOM, timeout) also counts.
    if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then crashes=1; fi
    printf '%-10s executions=%s crashes=%s exec/s=%s cov=%s exit=%s\n' \
        "$t" "${execs:-?}" "$crashes" "${secs:-?}" "${cov:-?}" "$rc"
    if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        failed=1
        echo "---- last lines of $log ----"
        tail -40 "$log"
    fi
done

rm -rf "$LOGDIR"
exit "$failed"
