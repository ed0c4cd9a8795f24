# The image the Helm chart runs, for those with Docker: its Deployment passes `run`
# and the listener flags as arguments to this entrypoint.
#   docker build --build-arg REVISION=$(git rev-parse HEAD) -t <your-registry>/spangate:0.1.0 .
# scripts/image builds the same image without a container engine (the binary, the
# glibc libraries it links, no shell) as an OCI archive; CI builds and runs that one.
# Both declare the same user, entrypoint and labels (tests/it/image.rs checks).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin spangate

FROM debian:bookworm-slim
ARG REVISION=unknown
LABEL org.opencontainers.image.title="spangate" \
      org.opencontainers.image.description="Progressive feature rollouts judged by OpenTelemetry traces, with automatic rollback" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/spangate/spangate" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /src/target/release/spangate /usr/local/bin/
# The chart's security context runs it as this non-root user with a read-only root
# filesystem; spangate writes nothing to disk in a cluster.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/spangate"]
CMD ["run"]
