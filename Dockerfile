# Multi-arch image of the operator: DGX Spark nodes are linux/arm64.
#   docker buildx build --platform linux/arm64,linux/amd64 -t ghcr.io/raibid-labs/raibid-operator:0.1.0 .
FROM --platform=$BUILDPLATFORM rust:1.95-bookworm AS build
ARG TARGETARCH
RUN case "$TARGETARCH" in \
      arm64) echo aarch64-unknown-linux-gnu > /target ;; \
      amd64) echo x86_64-unknown-linux-gnu > /target ;; \
      *) echo "unsupported architecture $TARGETARCH" >&2; exit 1 ;; \
    esac \
 && rustup target add "$(cat /target)" \
 && if [ "$TARGETARCH" = arm64 ]; then apt-get update && apt-get install -y --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross; fi
ENV CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crds ./crds
RUN cargo build --locked --release --bin raibid-operator --target "$(cat /target)" \
 && cp "target/$(cat /target)/release/raibid-operator" /raibid-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /raibid-operator /usr/local/bin/raibid-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/raibid-operator"]
CMD ["run"]
