# The node-installer image: weft-node-installer, containerd-shim-weft-v1 and
# kubectl (Debian's), used by deploy/installer.yaml. Build from the
# repository root:
#
#   docker build -f deploy/installer.Dockerfile -t weft-node-installer:0.1.0 .
#
# The shim is copied onto each node and runs there with the node's own
# libraries: libseccomp is linked statically, so it needs only glibc 2.36 or
# newer (Debian 12, Ubuntu 22.10+, the kind and k3s node images).
# `weft-node-installer --verify` checks that it runs before the node is
# labelled weft.dev/runtime=ready.
FROM rust:1.95-bookworm AS build
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler libseccomp-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ENV LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu
RUN case "$(dpkg --print-architecture)" in arm64) export LIBSECCOMP_LIB_PATH=/usr/lib/aarch64-linux-gnu;; esac \
 && cargo build --release --locked -p containerd-shim-weft -p weft-node-installer \
 && install -D target/release/containerd-shim-weft-v1 /out/opt/weft/bin/containerd-shim-weft-v1 \
 && install -D target/release/weft-node-installer /out/usr/local/bin/weft-node-installer

FROM debian:bookworm-slim
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client util-linux \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /
ENTRYPOINT ["weft-node-installer"]
