# Both binaries in one small image: built on Debian with the project's locked dependencies,
# run on distroless (glibc, CA certificates, nothing else) as the non-root user 65532, with
# etcd's release binaries beside them for the restore drill.
#   docker build -t ghcr.io/etcdmedic/etcdmedic:0.1.0 .
# Every base image is pinned by digest (the multi-architecture index), so a rebuild starts from
# the bytes that were reviewed; the tag beside it says what the digest is. A test keeps these
# pins well-formed and the etcd release one the README says the tests run.
ARG RUST_IMAGE=rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f

FROM ${RUST_IMAGE} AS build
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --locked --release -p etcdmedic-exporter -p etcdmedic-remediator \
 && install -D -m 0755 target/release/etcdmedic-exporter /out/etcdmedic-exporter \
 && install -D -m 0755 target/release/etcdmedic-remediator /out/etcdmedic-remediator

# etcd's own etcd, etcdutl and etcdctl, for the remediator's restore drill: the release tarball,
# checked against a SHA-256 pinned here for each architecture (the values of the release's
# SHA256SUMS), never against a file fetched from the same place as the tarball. Use the minor
# release your clusters run: another ETCD_VERSION needs its own ETCD_SHA256_<ARCH> values.
# The build image already has curl and the CA certificates.
FROM ${RUST_IMAGE} AS etcd
ARG ETCD_VERSION=v3.5.30
ARG ETCD_SHA256_AMD64=a495115162845640be08c6cda069ff961260dbced53207c5a83b1b006ff2ea8e
ARG ETCD_SHA256_ARM64=4d19473d2567a58e1dbf556e0813b91d506666e58d23bfd5370660c67639eb5e
ARG TARGETARCH=amd64
WORKDIR /tmp/etcd
RUN case "${TARGETARCH}" in \
      amd64) sum="${ETCD_SHA256_AMD64}" ;; \
      arm64) sum="${ETCD_SHA256_ARM64}" ;; \
      *) echo "no pinned etcd checksum for ${TARGETARCH}" >&2; exit 1 ;; \
    esac \
 && tarball="etcd-${ETCD_VERSION}-linux-${TARGETARCH}.tar.gz" \
 && curl -fsSLO "https://github.com/etcd-io/etcd/releases/download/${ETCD_VERSION}/${tarball}" \
 && echo "${sum}  ${tarball}" | sha256sum -c - \
 && tar -xzf "${tarball}" --strip-components=1 \
 && install -D -m 0755 etcd etcdutl etcdctl -t /out/

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/ /usr/local/bin/
COPY --from=etcd /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 9379 9380
# The command picks the binary: etcdmedic-exporter (default) or etcdmedic-remediator.
ENTRYPOINT ["/usr/local/bin/etcdmedic-exporter"]
CMD ["serve", "--config", "/etc/etcdmedic/config/etcdmedic.yaml"]
