# etcdmedic. `make` alone lists the targets; two of them set everything up on a fresh Debian
# bookworm machine (each installs what is missing first, scripts/install-deps.sh):
#   make demo   the whole loop on loopback: a 3-member etcd, the exporter, Prometheus,
#               Alertmanager, an S3 server and the remediator; Ctrl-C stops it all
#   make test   everything CI checks
# A target's `##` comment is its line in `make help`.

CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: help deps build demo test lint unit docs bench coverage generate clean
.DEFAULT_GOAL := help

help: ## this list
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-9s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## install what is missing (apt, PyPI, npm; scripts/install-deps.sh)
	./scripts/install-deps.sh

build: deps ## build every binary (debug)
	$(CARGO) build --locked --workspace --bins

demo: build ## the whole loop on a local stack, with instructions; Ctrl-C stops it
	./target/debug/etcdmedic-demo

lint: deps ## cargo fmt --check and clippy -D warnings
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

unit: ## the fast loop: unit and scenario tests, no etcd started
	$(CARGO) test --locked --workspace --exclude etcdmedic-tests

# The end-to-end tests run the workspace's binaries, so they are built first. A failing
# test's error stays a few lines long even where CI sets RUST_BACKTRACE.
test: export RUST_LIB_BACKTRACE = 0
test: lint build ## lint, unit, promtool and end-to-end tests against real etcd, Prometheus, Alertmanager and object stores
	$(CARGO) test --locked --workspace

docs: deps ## build the book (docs/, mdBook) into target/book
	$${ETCDMEDIC_DEPS:-/opt/etcdmedic-deps}/mdbook/bin/mdbook build docs

# deploy/kubernetes/prometheusrule.yaml and grafana-dashboards.yaml from alerts/ and
# dashboards/; `make test` fails while they differ.
generate: ## rewrite deploy/kubernetes's copies of the rules and dashboards
	UPDATE_GENERATED=1 $(CARGO) test --locked -p etcdmedic-tests --test e2e dashboards::the_kubernetes_copies_match_their_sources

bench: ## speed and memory benchmarks (release build); rewrites docs/benchmarks.md
	./scripts/install-deps.sh --bench
	$(CARGO) build --locked --release --workspace --bins
	./target/release/etcdmedic-bench --output docs/benchmarks.md

coverage: deps ## engine line coverage (cargo-llvm-cov); rewrites docs/coverage.md
	./scripts/coverage.sh

clean: ## cargo clean
	$(CARGO) clean
