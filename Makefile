# Developer entry points. `make` (or `make help`) lists them; each target is one call to a real tool.
# Helper scripts live in scripts/; CI runs .ci/run, which ends with `make test`.

SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO        ?= cargo
IMAGE        ?= ip-counter:latest
LOG_PORT     ?= 5000
METRICS_PORT ?= 9102

.PHONY: help build run dev test test-unit test-integration bench load-test durability-cost windows-cost approx-cost redis-cost shipper-cost ab crash-test restart-time security-cost body-flood fuzz chaos memory coverage \
        fmt lint audit check ci docs docker-build docker-run install-dev-deps

help: ## List the targets with a one-line description
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build the release binary (target/release/ip-counter)
	$(CARGO) build --release

run: ## Run the service in release mode (LOG_PORT, METRICS_PORT, ... from the environment)
	$(CARGO) run --release

dev: ## Rebuild and restart on every change (needs cargo-watch: `cargo install cargo-watch --locked`)
	scripts/cargo-tool.sh watch cargo-watch && $(CARGO) watch -x run

test: ## Install the test tools (promtool) if missing, run every test target, then the doc tests
	scripts/install-test-deps.sh && $(CARGO) test --all-targets && $(CARGO) test --doc

test-unit: ## Run the unit tests (the library's own #[cfg(test)] modules)
	$(CARGO) test --lib

test-integration: ## Run the HTTP API integration tests (tests/api)
	$(CARGO) test --test api

bench: ## Run the criterion benchmarks (benches/)
	$(CARGO) bench

bench-batch: ; scripts/bench-batch.sh ## Bulk-ingest figures: HTTP batches vs baseline, `count` vs cut|sort (GOACCESS=1: GoAccess)

load-test: ## wrk load test: the service against a bare hyper server (ROUNDS=3 DURATION=10s)
	scripts/load-test.sh

durability-cost: ## Throughput memory-only vs DURABILITY=buffered vs fsync, as ratios (ROUNDS=3)
	scripts/durability-cost.sh

windows-cost: ## Throughput with the default WINDOWS against WINDOWS= (off): single entries and bulk batches (ROUNDS=5)
	scripts/windows-cost.sh

approx-cost: ## COUNT_MODE=approx against exact (both with the default windows; WINDOWS_OFF=1: off): single entries and bulk batches (ROUNDS=5)
	scripts/approx-cost.sh

redis-cost: ## STORE=redis against local: single entries with ~90 % repeats, bulk batches, Redis memory per address (ROUNDS=5)
	scripts/redis-cost.sh

shipper-cost: ## nginx's mirror against tailing its log with send --follow: cost per request, delay, loss across a restart (ROUNDS=3)
	scripts/shipper-cost.sh

ab: ## A change against an older build: single entries, bulk batches, data-directory compatibility (REV=HEAD~1 ROUNDS=5)
	scripts/ab.sh $(or $(REV),HEAD~1)

crash-test: ## kill -9 at random moments under big-batch and single-entry load, CRASH_KILLS (40) per durability mode
	$(CARGO) test --release --test api persistence::crash_test -- --ignored --nocapture

restart-time: ## Time from start to /ready 200 on a data directory of 10M IPv4 + 1M IPv6, and its bytes per address
	scripts/restart-time.sh

security-cost: ## Throughput of the service with AUTH_TOKEN, TLS and both, as ratios to plain (ROUNDS=3)
	scripts/security-cost.sh

fuzz: ## Run every cargo-fuzz target on stable for FUZZ_SECONDS (60) each (installs cargo-fuzz)
	scripts/fuzz.sh

body-flood: ## Peak RSS under 40 connections holding 50 MiB bodies, with MAX_INFLIGHT_BODY_BYTES=256MiB
	$(CARGO) build --release --bin ip-counter && scripts/body-flood.py

chaos: ## A minute of mixed valid, invalid, oversized, slow and dropped requests against the release binary
	$(CARGO) build --release --bin ip-counter && scripts/chaos.py --binary target/release/ip-counter --seconds 60

memory: ## Measure memory per unique address (examples/memory.rs)
	$(CARGO) run --release --example memory

coverage: ## HTML coverage report in target/llvm-cov/html (installs cargo-llvm-cov if missing)
	scripts/cargo-tool.sh llvm-cov cargo-llvm-cov --install && $(CARGO) llvm-cov --all-targets --html

fmt: ## Format the code
	$(CARGO) fmt --all

lint: ## Clippy on every target, warnings are errors
	$(CARGO) clippy --all-targets -- -D warnings

audit: ## Check Cargo.lock against the RustSec advisory DB (installs cargo-audit; needs network)
	scripts/cargo-tool.sh audit cargo-audit --install && scripts/audit.sh

check: ## Formatting check, lint and tests: what CI runs
	$(CARGO) fmt --all -- --check && $(MAKE) --no-print-directory lint test

ci: ## Run the CI script exactly as CI does
	bash .ci/run

docs: ## Build the API documentation (target/doc/ip_counter/index.html)
	$(CARGO) doc --no-deps

docker-build: ## Build the container image (IMAGE=ip-counter:latest)
	scripts/docker-check.sh && docker build -t $(IMAGE) .

docker-run: ## Run the container image with both ports published
	scripts/docker-check.sh && docker run --rm -p $(LOG_PORT):5000 -p $(METRICS_PORT):9102 $(IMAGE)

install-dev-deps: ## rustfmt + clippy, cargo-watch/llvm-cov/audit, and the apt test tools
	scripts/install-dev-deps.sh
