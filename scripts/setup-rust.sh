#!/usr/bin/env bash
# Make the pinned toolchain (rust-toolchain.toml) ready to build everything
# here: its wasm targets and components. rustup installs those only when it
# installs the toolchain itself, so a machine that already had the toolchain
# (most of them) would build the host crates and then fail in a build script
# that compiles a guest module for a target it lacks. The demo and the test
# suite both start here.
set -euo pipefail
cd "$(dirname "$0")/.."

# The lists of the toolchain file: targets = ["a", "b"], components = [...].
list() {
    sed -n "s/^$1 *= *\[\(.*\)\]/\1/p" rust-toolchain.toml | tr -d '" ' | tr ',' ' '
}
targets=$(list targets)
components=$(list components)

rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install
missing=()
installed=$(rustup target list --installed)
for t in $targets; do
    grep -qx "$t" <<<"$installed" || missing+=("$t")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup-rust: adding targets ${missing[*]}" >&2
    rustup target add "${missing[@]}" >&2
fi
[ -z "$components" ] || rustup component add $components >/dev/null 2>&1 ||
    rustup component add $components >&2

# A C compiler and linker: cargo needs one for the host build (ring,
# libc-linked build scripts); rustup does not bring it.
if ! command -v cc >/dev/null 2>&1; then
    sudo_=; [ "$(id -u)" = 0 ] || sudo_=sudo
    $sudo_ apt-get update -qq
    $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential
fi

# Every target the toolchain file lists must be there now.
installed=$(rustup target list --installed)
for t in $targets; do
    grep -qx "$t" <<<"$installed" || { echo "setup-rust: target $t is still missing" >&2; exit 1; }
done
