# etcdmedic: two commands set everything up on a fresh Debian machine.
#   make demo   a local 3-member etcd and the exporter, with instructions; Ctrl-C stops it
#   make test   formatting, clippy, unit and promtool rule tests, end-to-end tests against real
#               etcd 3.4/3.5, Prometheus and Alertmanager
#   make unit   the fast loop: unit tests of every crate, no etcd started (seconds, once built)
#   make bench  scrape latency, scale and memory; remediation against the etcdctl procedure;
#               writes docs/benchmarks.md
#   make coverage  line coverage of the engine by its unit and scenario tests (cargo-llvm-cov);
#               writes docs/coverage.md
# Each installs what is missing first (scripts/install-deps.sh).

CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: deps build demo test lint unit bench coverage generate clean

deps:
	./scripts/install-deps.sh

build: deps
	$(CARGO) build --locked --workspace --bins

demo: build
	./target/debug/etcdmedic-demo

lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --locked --workspace --exclude etcdmedic-tests

# The end-to-end tests run the workspace's binaries, so they are built first. A failing
# test's error stays a few lines long even where CI sets RUST_BACKTRACE.
test: export RUST_LIB_BACKTRACE = 0
test: lint build
	$(CARGO) test --locked --workspace

# deploy/kubernetes/prometheusrule.yaml and grafana-dashboards.yaml from alerts/ and
# dashboards/; `make test` fails while they differ.
generate:
	UPDATE_GENERATED=1 $(CARGO) test --locked -p etcdmedic-tests --test e2e dashboards::the_kubernetes_copies_match_their_sources

bench: deps
	$(CARGO) build --locked --release --workspace --bins
	./target/release/etcdmedic-bench --output docs/benchmarks.md

coverage: deps
	./scripts/coverage.sh

clean:
	$(CARGO) clean
