# switchyard container image: a multi-stage build, a small Debian runtime, a non-root user.
#
#   docker build -t switchyard:0.1.0 .
#   docker run --rm -v "$PWD/switchyard.yaml:/etc/switchyard/switchyard.yaml:ro" \
#     -p 8080:8080 -p 9464:9464 switchyard:0.1.0
#
# The config is read from /etc/switchyard/switchyard.yaml (SWITCHYARD_CONFIG) and reloaded when
# it changes (a ConfigMap update) or on SIGHUP. Inside a container set `admin.listen` and
# `ingress.listen` to 0.0.0.0 so probes and callers from outside the container reach them.
# tests/container.rs runs the built binary the way this file does.

FROM rust:1-bookworm AS build
# librdkafka is built from source by rdkafka (gcc, make, perl are in the base image);
# it links OpenSSL and zlib.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev zlib1g-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile production --locked --bin switchyard \
 && cp target/production/switchyard /usr/local/bin/switchyard

FROM debian:bookworm-slim
# The binary's shared libraries beyond libc: OpenSSL 3 and zlib (librdkafka); CA roots for TLS.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin switchyard \
 && mkdir -p /etc/switchyard /var/lib/switchyard \
 && chown switchyard:switchyard /var/lib/switchyard
COPY --from=build /usr/local/bin/switchyard /usr/local/bin/switchyard
USER 10001:10001
WORKDIR /var/lib/switchyard
ENV SWITCHYARD_CONFIG=/etc/switchyard/switchyard.yaml \
    SWITCHYARD_LOG_FORMAT=json \
    RUST_LOG=info
# 8080: the ingress (http and slack triggers); 9464: /healthz, /readyz, /metrics.
EXPOSE 8080 9464
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["switchyard", "health", "--ready"]
ENTRYPOINT ["switchyard"]
CMD ["run"]
