#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder and parser untrusted bytes reach
# (crates/fuzz: harnesses and their properties; crates/fuzz/libfuzzer: the
# libFuzzer binaries), with cargo-fuzz on the pinned stable toolchain.
#
#   scripts/fuzz.sh TARGET [RUNS]    fuzz one target, RUNS inputs (default 1000000)
#   scripts/fuzz.sh all [RUNS]       every target in turn
#   scripts/fuzz.sh --smoke          what CI runs: the abi target for 30 s
#                                    (it builds without the heavy crates)
#
# The corpus grows in target/fuzz-corpus/TARGET, seeded from
# crates/fuzz/corpus/TARGET. A crash leaves its input under
# crates/fuzz/libfuzzer/artifacts/TARGET/: copy it into
# crates/fuzz/regressions/TARGET/ with a name that says what it broke, so
# the test suite replays it for ever (crates/fuzz/tests/corpus.rs).
#
# Environment: FUZZ_JOBS (parallel jobs, default 1), FUZZ_RSS_MB (memory
# cap per input, default 2048: a harness that allocates past it fails).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
targets=(abi v2_rest v2_grpc onnx tflite tensorflow oci weft_toml agent_config onnx_import)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz@0.13.2 >&2
fi

# cargo-fuzz's instrumentation flags are stable rustc options except for the
# sanitizer, which we leave off (-s none): these harnesses check their own
# properties, and Rust code is memory-safe where it matters here.
# RUSTC_BOOTSTRAP lets cargo-fuzz's remaining -Z flags through on stable.
export RUSTC_BOOTSTRAP=1
fuzz() {
    local target=$1 runs=$2 seconds=${3:-0} features=${4:-}
    local corpus=target/fuzz-corpus/$target
    mkdir -p "$corpus"
    cp -n crates/fuzz/corpus/"$target"/* "$corpus"/ 2>/dev/null || true
    local args=(-runs="$runs" -rss_limit_mb="${FUZZ_RSS_MB:-2048}" -malloc_limit_mb="${FUZZ_RSS_MB:-2048}" -timeout=20 -print_final_stats=1)
    [ "$seconds" = 0 ] || args+=(-max_total_time="$seconds")
    [ "${FUZZ_JOBS:-1}" = 1 ] || args+=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS")
    echo "==> fuzz $target ($runs inputs${seconds:+, at most ${seconds}s})" >&2
    cargo fuzz run --fuzz-dir crates/fuzz/libfuzzer -s none --release $features \
        --target-dir "$root/target/fuzz" "$target" "$corpus" -- "${args[@]}"
}

case "${1:-}" in
    --smoke)
        fuzz abi 100000000 30 --no-default-features
        ;;
    all)
        for t in "${targets[@]}"; do fuzz "$t" "${2:-1000000}"; done
        ;;
    "" | -h | --help)
        sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
        ;;
    *)
        fuzz "$1" "${2:-1000000}"
        ;;
esac
