#!/usr/bin/env bash
# Runs every cargo-fuzz target for FUZZ_SECONDS seconds (default 25) from its committed seeds
# (fuzz/seeds/<target>), on nightly with debug assertions, and fails on the first crash. The
# corpus grown on the way goes to a temp dir, so a run leaves the tree as it was; a crashing
# input is kept in fuzz/artifacts/<target>/ with the command that replays it.
#
# Longer local runs: cargo +nightly fuzz run -a filter_parse fuzz/corpus/filter_parse fuzz/seeds/filter_parse
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${FUZZ_SECONDS:-25}"
targets=(filter_parse event_verify car_read protocol_decode)
target_dir="${FUZZ_TARGET_DIR:-fuzz/target}"

# cargo-fuzz needs a nightly compiler (libFuzzer instrumentation); nightly itself cannot be
# installed from here (no toolchain downloads), cargo-fuzz can (crates.io).
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz-smoke: no nightly toolchain (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

start=$(date +%s)
cargo +nightly fuzz build -a --target-dir "$target_dir"
echo "fuzz-smoke: built the targets in $(($(date +%s) - start)) s"

corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
passed=0
for t in "${targets[@]}"; do
    mkdir -p "$corpus/$t"
    # -timeout: one input taking over 10 s is a hang, and a failure.
    if ! cargo +nightly fuzz run -a --target-dir "$target_dir" "$t" "$corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 2>"$corpus/$t.log"; then
        tail -n 60 "$corpus/$t.log" >&2
        echo "fuzz: $passed passed, 1 failed ($t; replay: cargo +nightly fuzz run -a $t fuzz/artifacts/$t/<file>)"
        exit 1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$corpus/$t.log" | grep -o '[0-9]*$' || echo '?')
    echo "fuzz-smoke: $t clean, $runs runs in ${secs} s"
    passed=$((passed + 1))
done
echo "fuzz: $passed passed, 0 failed"
