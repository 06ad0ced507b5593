# Both binaries in one small image: built on Debian with the project's locked dependencies,
# run on distroless (glibc, CA certificates, nothing else) as the non-root user 65532, with
# etcd's release binaries beside them for the restore drill.
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

# etcd's own etcd, etcdutl and etcdctl, for the remediator's restore drill: the release tarball,
# checked against the release's SHA256SUMS. Use the minor release your clusters run.
FROM debian:bookworm-slim AS etcd
ARG ETCD_VERSION=v3.5.17
ARG TARGETARCH=amd64
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /tmp/etcd
RUN tarball="etcd-${ETCD_VERSION}-linux-${TARGETARCH}.tar.gz" \
 && curl -fsSLO "https://github.com/etcd-io/etcd/releases/download/${ETCD_VERSION}/${tarball}" \
 && curl -fsSLO "https://github.com/etcd-io/etcd/releases/download/${ETCD_VERSION}/SHA256SUMS" \
 && grep " ${tarball}\$" SHA256SUMS | sha256sum -c - \
 && tar -xzf "${tarball}" --strip-components=1 \
 && install -D -m 0755 etcd etcdutl etcdctl -t /out/

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
COPY --from=etcd /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 9379 9380
# The command picks the binary: etcdmedic-exporter (default) or etcdmedic-remediator.
ENTRYPOINT ["/usr/local/bin/etcdmedic-exporter"]
CMD ["serve", "--config", "/etc/etcdmedic/config/etcdmedic.yaml"]
