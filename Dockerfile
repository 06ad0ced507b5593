# Both binaries in one small image: built on Debian with the project's locked dependencies,
# run on distroless (glibc, CA certificates, nothing else) as the non-root user 65532.
#   docker build -t ghcr.io/etcdmedic/etcdmedic:0.1.0 .
FROM rust:1.95-bookworm AS build
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --locked --release -p etcdmedic-exporter -p etcdmedic-remediator \
 && install -D -m 0755 target/release/etcdmedic-exporter /out/etcdmedic-exporter \
 && install -D -m 0755 target/release/etcdmedic-remediator /out/etcdmedic-remediator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 9379 9380
# The command picks the binary: etcdmedic-exporter (default) or etcdmedic-remediator.
ENTRYPOINT ["/usr/local/bin/etcdmedic-exporter"]
CMD ["serve", "--config", "/etc/etcdmedic/config/etcdmedic.yaml"]
