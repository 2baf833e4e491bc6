# The regional core's image, for operators who build with Docker (or any OCI builder).
#   docker build -t ticketing-core .
#   docker run -e DATABASE_URL=postgres://… -e CORE_SIGNING_KEY=<kid>:<seed> -p 8080:8080 ticketing-core
# The check-in gRPC listens on loopback unless given TLS (CORE_GRPC_LISTEN=0.0.0.0:50051 with
# CORE_GRPC_TLS_CERT and CORE_GRPC_TLS_KEY; infra/k8s does so). Every setting: docs/configuration.md.
#
# The test command cannot run a Docker engine; it builds the same layout with buildah from scratch
# (scripts/image.sh), checks that it matches this file's final stage (user, environment, ports,
# health check) and starts the core from that image's root filesystem with only a database and a
# key given. Keep the two in step (infra/README.md).

# ---- build: the release binary ------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
# librdkafka and OpenSSL are compiled from source (make and perl, both in this image): TLS and
# SASL (PLAIN, SCRAM) without system libraries.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p regional-core \
 && install -D -m 0755 target/release/regional-core /out/regional-core \
 && strip /out/regional-core

# ---- run: distroless, non-root, no shell ---------------------------------------------------------
# cc-debian12 carries glibc, libgcc and the CA certificates; zlib (librdkafka's compression) is
# copied in. The binary loads nothing else (`ldd`; scripts/image.sh copies exactly that list).
FROM gcr.io/distroless/cc-debian12:nonroot
# (x86_64; on arm64 the path is /lib/aarch64-linux-gnu.)
COPY --from=build /lib/x86_64-linux-gnu/libz.so.1 /lib/x86_64-linux-gnu/libz.so.1
COPY --from=build /out/regional-core /usr/local/bin/regional-core
USER 10001:10001
ENV CORE_LISTEN=0.0.0.0:8080 \
    CORE_METRICS_LISTEN=0.0.0.0:9090 \
    LOG_FORMAT=json \
    RUST_LOG=info
EXPOSE 8080 9090 50051
# The core probes itself (no curl in the image): exit 0 when /readyz answers 200.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/regional-core", "probe", "http://127.0.0.1:8080/readyz"]
ENTRYPOINT ["/usr/local/bin/regional-core"]
CMD ["serve"]
