# The image the Helm chart runs: its Deployment passes `run` and the listener flags
# as arguments to this entrypoint. Build and push it yourself:
#   docker build -t <your-registry>/spangate:0.1.0 .
# (CI does not build it: its machines have no container engine.)
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin spangate --bin kubectl-spangate

FROM debian:bookworm-slim
COPY --from=build /src/target/release/spangate /src/target/release/kubectl-spangate /usr/local/bin/
# The chart's security context runs it as this non-root user with a read-only root
# filesystem; spangate writes nothing to disk in a cluster.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/spangate"]
CMD ["run"]
