# The sluice binary (processors, ingest API, registry, CLI) for docker-compose.yml.
#   docker build -t sluice .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The same build command as the README's.
RUN cargo build --release -p sluice-cli

FROM debian:bookworm-slim
# libssl3: librdkafka links OpenSSL (SASL/SCRAM and TLS to the brokers).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
COPY topology.toml /app/topology.toml
WORKDIR /app
ENV SLUICE__STATE_DIR=/var/lib/sluice/state
# 8080: ingest API and console; 8090: interactive queries (sluice run); 9464: processor metrics.
EXPOSE 8080 8090 9464
ENTRYPOINT ["sluice"]
CMD ["--help"]
