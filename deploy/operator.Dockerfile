# The operator's image: `weft-operator` on a distroless base. Build from the
# repository root:
#
#   docker build -f deploy/operator.Dockerfile -t weft-operator:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p weft-operator --bin weft-operator \
 && install -D target/release/weft-operator /out/weft-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/weft-operator /usr/local/bin/weft-operator
ENTRYPOINT ["/usr/local/bin/weft-operator"]
