# syntax=docker/dockerfile:1
# Builds the three services (and the launcher) in one image; fly.toml runs each as its own
# process group. Multi-stage: the toolchain stays in the build stage, the runtime image is
# Debian slim with CA certificates and an unprivileged user.

FROM rust:1-bookworm AS build
# pingora's zlib-ng needs cmake; everything else is in the Rust image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
      -p stellar-engine -p stellar-billing -p stellar-gateway -p stellar-launcher \
 && strip target/release/stellar-engine target/release/stellar-billing target/release/stellar-gateway target/release/stellar

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin stellar \
 && mkdir -p /data && chown stellar:stellar /data
WORKDIR /app
COPY --from=build /src/target/release/stellar-engine /src/target/release/stellar-billing \
                  /src/target/release/stellar-gateway /src/target/release/stellar /usr/local/bin/
COPY config ./config
COPY landing ./landing
USER stellar
ENV STELLAR_DATA_DIR=/data \
    STELLAR_CONFIG=/app/config/production.toml \
    STELLAR_LOG_FORMAT=json
EXPOSE 8080 9091
CMD ["stellar-gateway"]
