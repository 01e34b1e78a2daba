#!/usr/bin/env bash
# Fuzzes frugal's parsers and encoder with cargo-fuzz (libFuzzer + AddressSanitizer, nightly),
# each target for a budget, then replays the committed corpus without libFuzzer. Not part of
# the test command: run it after changing a parser. New corpus entries that cover new paths
# are kept under fuzz/corpus/TARGET (commit them); a crashing input lands in
# fuzz/artifacts/TARGET: copy it into fuzz/regressions/TARGET and fix the bug.
#
# Usage: bench/fuzz.sh [TARGET ...]       (default: every target)
# Env:   SECONDS_PER_TARGET (default 60), JOBS (parallel libFuzzer jobs per target, default 1),
#        FUZZ_LOGS (libFuzzer's output per target, default fuzz/target/fuzz-logs)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "cargo-fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2
    exit 1
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

budget="${SECONDS_PER_TARGET:-60}"
logs="${FUZZ_LOGS:-target/fuzz-logs}"
mkdir -p "$logs"
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || mapfile -t targets < <(cargo +nightly fuzz list | grep -vx -e replay -e seeds)
jobs=()
[[ "${JOBS:-1}" -gt 1 ]] && jobs=(-jobs="$JOBS" -workers="$JOBS")
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    # A checkpoint for the tiny model is ~110 KB; every other input stays small.
    max_len=65536
    [[ "$t" == safetensors ]] && max_len=262144
    echo "== $t: ${budget}s (log: fuzz/$logs/$t.log)"
    # libFuzzer's final stats say how many inputs it ran (stat::number_of_executed_units).
    cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$budget" -max_len="$max_len" -rss_limit_mb=4096 -timeout=10 \
        -print_final_stats=1 "${jobs[@]}" >"$logs/$t.log" 2>&1 || echo "!! $t stopped with an error: see $logs/$t.log"
    grep -E "^(stat::number_of_executed_units|stat::new_units_added|==[0-9]+==ERROR|SUMMARY|Done)" "$logs/$t.log" || true
    # Keep the committed corpus small: only inputs that add coverage.
    cargo +nightly fuzz cmin "$t" "corpus/$t" >/dev/null 2>&1 || echo "!! cmin failed for $t"
done
echo "== replaying the seeds, corpus and regressions"
cargo +nightly fuzz build replay >/dev/null
target/x86_64-unknown-linux-gnu/release/replay
