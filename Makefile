# clawbox — the two commands that matter: `make run` and `make test`.
CARGO ?= cargo
RELEASE_BIN := target/release

PREFIX ?= $(HOME)/.local

.PHONY: all build build-release install run serve status test lint fmt bench clean venv image busybox strace llama chromium

# A Python environment with the official MCP SDK and a third-party MCP server, for the
# interoperability tests. Rebuilt when tests/requirements.txt changes.
VENV := .venv
$(VENV)/.stamp: tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

venv: $(VENV)/.stamp

# The agent image's shell and core utilities come from Debian's busybox-static (a static
# binary, so it runs in an image without libc's loader path). Installed when missing.
busybox:
	@test -x /bin/busybox || test -x /usr/bin/busybox || { \
		echo "installing busybox-static (the agent image's shell)"; \
		apt-get install -y -qq busybox-static || \
		{ apt-get update -qq && apt-get install -y -qq busybox-static; }; }

# The dashboard's browser test drives Debian's headless Chromium. Installed when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
		echo "installing chromium (the dashboard's browser test)"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }; }

## The agent image for CONTAINER_RUNTIME=docker (CONTAINER_IMAGE, default clawbox-agent:<hash
## of what goes into it>), built from the release binaries without any registry. `clawbox
## run`/`chat` also build it when it is missing or older than the binaries next to them.
image: build-release busybox
	$(RELEASE_BIN)/clawbox image build

# `make bench` counts fsyncs with strace. Installed when missing.
strace:
	@command -v strace >/dev/null || { \
		echo "installing strace (make bench counts fsyncs with it)"; \
		apt-get install -y -qq strace || \
		{ apt-get update -qq && apt-get install -y -qq strace; }; }

all: build

## Build every binary (clawbox, agent-runner, mcp-tools) in debug mode.
build:
	$(CARGO) build --workspace --bins

build-release:
	$(CARGO) build --release --workspace --bins

## Install clawbox, agent-runner, mcp-tools and create-agent into PREFIX/bin (default ~/.local/bin)
## and the built-in skills into PREFIX/share/clawbox/skills. As root (`sudo make install
## PREFIX=/usr/local`) it installs what `make build-release` built, without building.
install: $(if $(filter 0,$(shell id -u)),,build-release)
	install -d $(PREFIX)/bin $(PREFIX)/share/clawbox
	install -m 0755 $(RELEASE_BIN)/clawbox $(RELEASE_BIN)/agent-runner $(RELEASE_BIN)/mcp-tools $(RELEASE_BIN)/create-agent $(PREFIX)/bin/
	rm -rf $(PREFIX)/share/clawbox/skills && cp -r container/skills $(PREFIX)/share/clawbox/skills

## Chat with the default agent in this terminal (starts a host in-process if none is running).
run: build busybox
	CLAWBOX_HOME=$(CURDIR) ./target/debug/clawbox chat

## Run the host in the foreground, as a service would.
serve: build busybox
	CLAWBOX_HOME=$(CURDIR) ./target/debug/clawbox run

status: build
	CLAWBOX_HOME=$(CURDIR) ./target/debug/clawbox status

## A real model server for the tests (llama-cpp-python + SmolLM2-135M), built once per machine
## into ~/.cache/clawbox (or $$CLAWBOX_CACHE), keyed by version.
llama:
	tests/llama-server.sh

## Formatting, lints, the layering check and the whole test suite (what CI runs).
test: lint venv busybox chromium
	$(CARGO) build --workspace --bins
	CLAWBOX_LLAMA_DIR=$$(tests/llama-server.sh) && export CLAWBOX_LLAMA_DIR && \
		CLAWBOX_TEST_PYTHON=$(CURDIR)/$(VENV)/bin/python $(CARGO) test --workspace

lint:
	python3 scripts/check-layers
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Latency and memory figures (release build, fake model; process runtime, then docker).
bench: build-release busybox strace
	$(CARGO) build --release -p host --example bench
	$(RELEASE_BIN)/examples/bench $(RELEASE_BIN)/clawbox
	$(CARGO) build --release -p host --example bench_dashboard
	$(RELEASE_BIN)/examples/bench_dashboard $(RELEASE_BIN)/clawbox

clean:
	$(CARGO) clean
