# The README's commands. `make demo` and `make test` set up what they need.
SHELL := /bin/bash
PORT ?= 8787
STATE ?= .wrangler/state
export WRANGLER_SEND_METRICS := false
export CLOUDFLARE_CF_FETCH_ENABLED := false
WRANGLER := node_modules/.bin/wrangler

.PHONY: setup setup-sepa build-edge edge migrate test test-native test-e2e test-fuzz lint bench fuzz soak demo clean

setup:
	@edge/setup.sh

# The worker's wasm, rebuilt only when its sources change.
EDGE_SOURCES := $(shell find edge/src edge/data -type f) edge/Cargo.toml edge/build.rs edge/build.sh Cargo.lock
edge/build/index_bg.wasm: $(EDGE_SOURCES)
	@sh edge/build.sh

build-edge: setup edge/build/index_bg.wasm

migrate: setup
	@$(WRANGLER) d1 migrations apply DB --local --persist-to $(STATE)

# Serves the worker at 127.0.0.1:$(PORT) with local D1/KV state in $(STATE).
edge: build-edge migrate
	@$(WRANGLER) dev --ip 127.0.0.1 --port $(PORT) --persist-to $(STATE)

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p edge --target wasm32-unknown-unknown -- -D warnings

# xmllint and the official pain.001.001.09 XSD for the SEPA payout test.
setup-sepa:
	@settlement/tests/setup-sepa.sh

test-native: setup-sepa
	cargo test --workspace --exclude e2e

test-e2e: build-edge
	@edge/setup-browser.sh
	cargo build --release -p settlement
	cargo test -p e2e -- --test-threads=4

# Every fuzz target briefly (make fuzz runs them for a minute each).
test-fuzz:
	FUZZ_SECONDS=$${FUZZ_SECONDS:-3} fuzz/run.sh

test: setup lint test-native test-e2e test-fuzz

fuzz:
	FUZZ_SECONDS=$${FUZZ_SECONDS:-60} fuzz/run.sh

# Edge: click route vs a static redirect, mint+verify, bot rules, wasm size.
# Settlement: 1M and 10M mixed-model events imported, run and reported, against DuckDB.
# Fraud: precision, recall and clean false positives of every rule (target/bench/fraud.json).
bench: build-edge
	cargo run --release -p e2e --bin bench-edge
	cargo run --release -p settlement --bin settlement-bench -- --events $${BENCH_EVENTS:-1000000,10000000}
	cargo run --release -p settlement --bin fraud-bench

# Reliability: 50,000 clicks and 10,000 postbacks from 64 clients with
# duplicates and malformed requests, then the same with workerd SIGKILLed and
# restarted twice; prints the counts, writes target/bench/reliability.json.
soak: build-edge
	PTRACK_START_TIMEOUT=$${PTRACK_START_TIMEOUT:-600} cargo run --release -p e2e --bin soak

# One cargo invocation builds both (the same feature set every run, so a
# second `make demo` compiles nothing), then the demo binary runs.
demo: build-edge
	cargo build --release -p settlement -p e2e
	target/release/demo

clean:
	rm -rf target edge/build .wrangler
