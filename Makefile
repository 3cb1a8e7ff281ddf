# clawbox — the two commands that matter: `make run` and `make test`.
CARGO ?= cargo
RELEASE_BIN := target/release

.PHONY: all build build-release run serve status test lint fmt bench clean venv

# A Python environment with the official MCP SDK and a third-party MCP server, for the
# interoperability tests. Rebuilt when tests/requirements.txt changes.
VENV := .venv
$(VENV)/.stamp: tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

venv: $(VENV)/.stamp

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
test: lint venv
	$(CARGO) build --workspace --bins
	CLAWBOX_TEST_PYTHON=$(CURDIR)/$(VENV)/bin/python $(CARGO) test --workspace

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
