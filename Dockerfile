# posthorn container image.
#
#   docker build -t posthorn:0.1.0 .
#   docker run --rm -p 8080:8080 -e POSTHORN_DATABASE_URL=... -e POSTHORN_JWT_SECRET=... posthorn:0.1.0
#
# Two stages: the build stage compiles the release binary with the same command
# as README.md (`cargo build --release --locked --bin posthorn`); the runtime
# stage is distroless (glibc and libgcc, no shell, no package manager) and runs
# as the unprivileged user `nonroot` (uid/gid 65532).
# scripts/check-dockerfile.sh checks this file offline.

# ---------------------------------------------------------------------------
# Build stage. For byte-for-byte reproducible builds pin a minor release here,
# e.g. rust:1.95-bookworm (the crate needs Rust 1.88 or newer: edition 2024).
FROM rust:1-bookworm AS build
WORKDIR /src

# Dependency layer: build every dependency against stub targets, so that this
# layer is reused for as long as Cargo.toml and Cargo.lock do not change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && : > src/lib.rs \
    && cargo build --release --locked --bin posthorn \
    && rm -rf src \
       target/release/posthorn target/release/deps/posthorn-* target/release/deps/libposthorn-* \
       target/release/.fingerprint/posthorn-*

# The real sources. migrations/ (sqlx::migrate!) and openapi.yaml
# (include_str!) are compiled into the binary, so they come before the build.
COPY migrations ./migrations
COPY openapi.yaml ./
COPY src ./src
RUN cargo build --release --locked --bin posthorn

# ---------------------------------------------------------------------------
# Runtime stage: no shell, so exec-form instructions only.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime

LABEL org.opencontainers.image.title="posthorn" \
      org.opencontainers.image.description="A transactional email HTTP gateway: authenticated JSON in, durable queue, pooled SMTP out." \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=build /src/target/release/posthorn /usr/local/bin/posthorn

USER nonroot:nonroot
# The embedded default (`docker run` with no configuration) keeps its data here: mount a volume on it
# to keep the queue, the generated token secret and the outbox across containers.
WORKDIR /home/nonroot
EXPOSE 8080
ENV POSTHORN_LISTEN=0.0.0.0:8080 POSTHORN_LOG_FORMAT=json POSTHORN_DATA_DIR=/home/nonroot/posthorn-data
ENTRYPOINT ["/usr/local/bin/posthorn"]
CMD ["serve"]
