#!/usr/bin/env bash
# Runs weft-gpu-bench on a machine with an NVIDIA GPU but no system Vulkan
# loader (the project's lent GPU machine), from a release build made
# elsewhere. Prepare once on the build machine, in the repository root:
#
#   echo /.gl/ >>.git/info/exclude; mkdir -p .gl /tmp/amd64/partial
#   o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
#   apt-get $o update
#   (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
#   cargo build --release -p weft-bench --bin weft-gpu-bench
#   mkdir -p .gl/bin && cp target/release/weft-gpu-bench .gl/bin/ && strip .gl/bin/weft-gpu-bench
#   scripts/fetch-models.sh
#
# then carry `.gl` and `models` to the GPU machine (the device tool carries
# at most 64 MiB: the stripped binary, the debs and the two OCR models fit)
# and run this script there. Without libglvnd0 wgpu reports no adapter.
# Arguments go to the bench (default: the issue's sizes and batch 16).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
if [ $# -eq 0 ]; then set -- --sizes 1024,4096,8192 --batch 16 --rounds 10; fi
exec .gl/bin/weft-gpu-bench --models models "$@"
