# syntax=docker/dockerfile:1
# Two stages: build the release binary with the Rust toolchain, then copy it alone into a slim
# Debian image (same Debian release, so the glibc matches) that runs it as a non-root user.
#
#   docker build -t ip-counter .
#   docker run --rm -p 5000:5000 -p 9102:9102 ip-counter

FROM rust:1-bookworm AS builder
WORKDIR /build

# Dependency layer: build the dependencies against placeholder sources, so that this layer is
# reused for as long as Cargo.toml and Cargo.lock do not change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && echo '//! placeholder' > src/lib.rs \
    && echo 'fn main() {}' > benches/store.rs \
    && echo 'fn main() {}' > benches/parse.rs \
    && cargo build --release --locked --bin ip-counter \
    && rm -rf src benches target/release/ip-counter* \
        target/release/deps/ip_counter-* target/release/deps/libip_counter-* \
        target/release/.fingerprint/ip-counter-*

# The real sources. Cargo.toml names the benches, so the manifest needs them to exist; tests/ and
# examples/ are only discovered when present and are not needed for the binary.
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin ip-counter \
    && cp target/release/ip-counter /usr/local/bin/ip-counter

FROM debian:bookworm-slim AS runtime
RUN groupadd --system --gid 10001 ip-counter \
    && useradd --system --uid 10001 --gid ip-counter --home-dir /var/lib/ip-counter \
        --create-home --shell /usr/sbin/nologin ip-counter
COPY --from=builder /usr/local/bin/ip-counter /usr/local/bin/ip-counter

# The count lives in DATA_DIR: a volume, owned by the service's user, so that it survives the
# container. Mount persistent storage there (docker run -v ip-counter-data:/data ...).
RUN install -d -o ip-counter -g ip-counter /data
VOLUME /data
WORKDIR /var/lib/ip-counter
# Numeric, the uid and gid created above: Kubernetes' runAsNonRoot can only verify a numeric
# user without reading the image's /etc/passwd (hadolint DL3066).
USER 10001:10001

ENV SERVER_HOST=0.0.0.0 \
    DATA_DIR=/data \
    LOG_PORT=5000 \
    METRICS_PORT=9102 \
    LOG_LEVEL=info \
    LOG_FORMAT=text
EXPOSE 5000 9102

# The slim image has no curl; bash's /dev/tcp sends a plain HTTP/1.1 GET /ready and the check
# passes only on a "200" status line. (Plain HTTP only: with TLS_CERT/TLS_KEY set on the ingest
# listener, replace this with an HTTPS client such as curl -k.)
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${LOG_PORT:-5000} && printf 'GET /ready HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

# The service handles SIGTERM (docker stop) itself: stops accepting, drains, exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ip-counter"]
