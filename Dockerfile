# syntax=docker/dockerfile:1
# One image with every Switchyard binary; compose.yaml picks the one to run per service.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
 && mkdir /out \
 && cp target/release/inventory-service target/release/order-service target/release/email-service \
       target/release/audit-service target/release/switchyard /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --create-home switchyard
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
WORKDIR /data
ENV DATA_DIR=/data LOG_FORMAT=json
# compose.yaml sets the command: inventory-service, order-service, email-service or audit-service.
CMD ["switchyard", "--help"]
