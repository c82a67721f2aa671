# The demo workload image for kind runs: `xtenant servicebusdemo`, the program the embedded
# cluster runs for ghcr.io/azure-samples/aks-app-samples/servicebusdemo.
#   docker build -t xtenant-demo:dev .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin xtenant

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/xtenant /usr/local/bin/xtenant
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/xtenant", "servicebusdemo"]
