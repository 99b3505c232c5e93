#!/usr/bin/env bash
# Runs every cargo-fuzz target for FUZZ_SECONDS seconds (default 25) from its committed seeds
# (fuzz/seeds/<target>) and fails on the first crash. The corpus grown on the way goes to a temp
# dir, so a run leaves the tree as it was; a crashing input is kept in fuzz/artifacts/<target>/
# with the command that replays it.
#
# CI runs it (scripts/test.sh) as a smoke test on the machine's one (stable) toolchain: an
# unoptimised build with debug assertions and libFuzzer's coverage instrumentation but no
# sanitizer (FUZZ_BUILD="--dev -s none"), which needs no nightly and builds in about 4 CPU-minutes
# instead of 15. The targets are safe Rust, so AddressSanitizer adds little; the long runs are
# still made with it on nightly:
#   FUZZ_BUILD="-a" FUZZ_TOOLCHAIN=+nightly FUZZ_SECONDS=600 scripts/fuzz-smoke.sh
#   cargo +nightly fuzz run -a filter_parse fuzz/corpus/filter_parse fuzz/seeds/filter_parse
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${FUZZ_SECONDS:-25}"
targets=(filter_parse event_verify car_read protocol_decode)
target_dir="${FUZZ_TARGET_DIR:-fuzz/target}"
read -r -a build <<<"${FUZZ_BUILD:---dev -s none}"
toolchain=()
if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
    toolchain=("$FUZZ_TOOLCHAIN")
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked
fi

start=$(date +%s)
cargo "${toolchain[@]}" fuzz build "${build[@]}" --target-dir "$target_dir"
echo "fuzz-smoke: built the targets in $(($(date +%s) - start)) s"

corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
passed=0
for t in "${targets[@]}"; do
    mkdir -p "$corpus/$t"
    # -timeout: one input taking over 10 s is a hang, and a failure.
    if ! cargo "${toolchain[@]}" fuzz run "${build[@]}" --target-dir "$target_dir" "$t" "$corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 2>"$corpus/$t.log"; then
        tail -n 60 "$corpus/$t.log" >&2
        echo "fuzz: $passed passed, 1 failed ($t; replay: cargo ${toolchain[*]} fuzz run ${build[*]} $t fuzz/artifacts/$t/<file>)"
        exit 1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$corpus/$t.log" | grep -o '[0-9]*$' || echo '?')
    echo "fuzz-smoke: $t clean, $runs runs in ${secs} s"
    passed=$((passed + 1))
done
echo "fuzz: $passed passed, 0 failed"
