#!/usr/bin/env bash
# Builds the libFuzzer binaries on a stable toolchain and runs each target for a bounded time,
# one at a time, printing executions and crashes per target (see ../README.md).
#
#   bash run.sh [SECONDS_PER_TARGET] [TARGET...]     # default 60 seconds, every target
#   RUNS=10000000 bash run.sh 1800                   # stop each at 10 M executions or 30 min
#
# New inputs libFuzzer finds go to $WORK/corpus/<target> (the committed seeds in
# ../corpus/<target> are read, never written); crashing inputs to $WORK/artifacts.
set -euo pipefail
cd "$(dirname "$0")"

secs="${1:-60}"
shift || true
targets=("$@")
if [ "${#targets[@]}" = 0 ]; then
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^herald-fuzz-libfuzzer$')
fi

triple="$(rustc -vV | sed -n 's/^host: //p')"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
WORK="${WORK:-$CARGO_TARGET_DIR/fuzz-work}"
# What cargo-fuzz passes, minus the sanitizer (which needs nightly): libFuzzer's coverage
# instrumentation is plain LLVM passes that stable rustc accepts.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cdebug-assertions -Coverflow-checks"
cargo build --release --target "$triple" --bins

mkdir -p "$WORK/artifacts"
for t in "${targets[@]}"; do
    mkdir -p "$WORK/corpus/$t"
    log="$WORK/$t.log"
    set +e
    began=$SECONDS
    "$CARGO_TARGET_DIR/$triple/release/$t" "$WORK/corpus/$t" "../corpus/$t" \
        -max_total_time="$secs" -max_len=4096 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$WORK/artifacts/$t-" ${RUNS:+-runs="$RUNS"} >"$log" 2>&1
    rc=$?
    set -e
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
    # slow-unit-* files are inputs over libFuzzer's -report_slow_units (10 s), which a paused
    # or starved process also produces; they are listed apart from failures.
    crashes="$(ls "$WORK/artifacts" | grep -cE "^$t-(crash|oom|timeout|leak)-" || true)"
    slow="$(ls "$WORK/artifacts" | grep -c "^$t-slow-unit-" || true)"
    echo "$t: ${execs:-?} executions in $((SECONDS - began))s, exit $rc, $crashes crash files, $slow slow units"
done
