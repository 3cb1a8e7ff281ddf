# clawbox — the two commands that matter: `make run` and `make test`.
CARGO ?= cargo
RELEASE_BIN := target/release

.PHONY: all build build-release run serve status test lint fmt bench clean

all: build

## Build every binary (clawbox, agent-runner, mcp-tools) in debug mode.
build:
	$(CARGO) build --workspace --bins

build-release:
	$(CARGO) build --release --workspace --bins

## Chat with the default agent in this terminal (starts a host in-process if none is running).
run: build
	./target/debug/clawbox chat

## Run the host in the foreground, as a service would.
serve: build
	./target/debug/clawbox run

status: build
	./target/debug/clawbox status

## Formatting, lints and the whole test suite (what CI runs).
test: lint
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Latency and memory figures (release build, fake model, process runtime).
bench: build-release
	$(CARGO) build --release -p host --example bench
	$(RELEASE_BIN)/examples/bench $(RELEASE_BIN)/clawbox

clean:
	$(CARGO) clean
