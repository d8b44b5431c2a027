# tollgate — build, demo and test entry points.
#
#   make demo     install missing system packages, build the release binary,
#                 run `tollgate demo` (mock backends + gateway on loopback)
#   make test     the whole test suite (nextest when installed, else cargo test)
#   make lint     rustfmt check + clippy with warnings as errors
#
# Every recipe runs unattended (CI=true, no stdin, fresh clone, fresh
# machine). System packages are installed with apt-get when missing, which
# needs root; otherwise the exact command to run is printed.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
MAKEFLAGS += --no-print-directory

CARGO ?= cargo
# Extra arguments for the test runner, e.g. `make test TEST_ARGS=jwt`.
TEST_ARGS ?=
# One criterion bench target (hot_path, jwt, llm); empty = all of them.
BENCH ?=

# Debian/Ubuntu packages needed to build Pingora and the bundled C code
# (libz-ng-sys runs cmake; ring, zstd, rusqlite's SQLite compile C).
APT_PACKAGES := cmake pkg-config build-essential

# The official SDKs tests/sdk.rs drives the gateway with, in a virtualenv
# under target/ (pinned: the versions the test was written against).
VENV := target/venv
SDK_PACKAGES := anthropic==2.15.0 openai==3.57.0 google-genai==3.6.1 mcp==2.3.0

# Installs the Debian packages listed in the shell variable `missing`
# (apt-get, as root), or prints the command to run; a no-op when none is.
APT_INSTALL_MISSING = \
	if [ -z "$$missing" ]; then exit 0; fi; \
	cmd="apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends$$missing"; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "error: missing packages:$$missing (install them with your package manager)" >&2; exit 1; \
	fi; \
	if [ "$$(id -u)" -ne 0 ]; then \
	  echo "error: missing packages:$$missing" >&2; \
	  echo "run as root:  sudo sh -c '$$cmd'" >&2; \
	  exit 1; \
	fi; \
	echo "installing:$$missing"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -qq; \
	apt-get install -y -qq --no-install-recommends $$missing >/dev/null

.PHONY: help deps test-deps build demo test lint modules check-config bench clean sdk-venv check-rules

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 16

deps: ## install missing system packages (cmake, pkg-config, C toolchain)
	@missing=""; \
	command -v cmake >/dev/null 2>&1      || missing="$$missing cmake"; \
	command -v pkg-config >/dev/null 2>&1 || missing="$$missing pkg-config"; \
	{ command -v cc >/dev/null 2>&1 && command -v c++ >/dev/null 2>&1 && command -v make >/dev/null 2>&1; } \
	                                      || missing="$$missing build-essential"; \
	$(APT_INSTALL_MISSING); \
	command -v cmake >/dev/null

test-deps: deps ## install missing test packages (redis-server for cluster tests, postgresql for the shared ledger tests, chromium for the usage page test, prometheus for promtool)
	@missing=""; \
	{ command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; } \
	                                      || missing="$$missing chromium"; \
	command -v promtool >/dev/null 2>&1   || missing="$$missing prometheus"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	$(APT_INSTALL_MISSING); \
	command -v promtool >/dev/null && command -v redis-server >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null

check-rules: test-deps ## validate the Prometheus alert rules with promtool
	promtool check rules conf/prometheus/tollgate-alerts.yaml

build: deps ## release build: target/release/tollgate
	$(CARGO) build --release --locked

demo: build ## run the demo: mock backends + gateway with conf/demo.yaml
	mkdir -p target/demo
	./target/release/tollgate demo

sdk-venv: ## virtualenv target/venv with the anthropic, openai, google-genai and mcp SDKs
	@if [ -x $(VENV)/bin/python ] && $(VENV)/bin/python -c 'import anthropic, openai, google.genai, mcp' 2>/dev/null; then exit 0; fi; \
	if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" -eq 0 ]; then \
	    echo "installing: python3 python3-venv"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq; \
	    apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null; \
	  else \
	    echo "python3 with venv not available: tests/sdk.rs will be skipped" >&2; exit 0; \
	  fi; \
	fi; \
	rm -rf $(VENV); \
	python3 -m venv $(VENV); \
	$(VENV)/bin/pip install -q --disable-pip-version-check $(SDK_PACKAGES)

test: test-deps check-rules sdk-venv ## the whole test suite
	$(CARGO) build --locked --all-targets
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  echo "+ $(CARGO) nextest run --locked --all-targets --no-fail-fast $(TEST_ARGS)"; \
	  $(CARGO) nextest run --locked --all-targets --no-fail-fast $(TEST_ARGS); \
	else \
	  echo "+ $(CARGO) test --locked --all-targets --no-fail-fast $(TEST_ARGS)  (cargo-nextest not installed)"; \
	  $(CARGO) test --locked --all-targets --no-fail-fast $(TEST_ARGS); \
	fi

lint: deps ## cargo fmt --check, clippy -D warnings, no import circle between modules
	@if ! $(CARGO) fmt --version >/dev/null 2>&1 || ! $(CARGO) clippy --version >/dev/null 2>&1; then \
	  if command -v rustup >/dev/null 2>&1; then rustup component add rustfmt clippy; \
	  else echo "error: rustfmt/clippy missing and rustup not found" >&2; exit 1; fi; \
	fi
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	python3 .ci/module_cycles.py src

# cargo-modules draws the module tree and its `use` graph (the lint's
# circle check above also reads paths written inline, which it does not).
CARGO_MODULES_VERSION := 0.27.0
modules: ## print the module tree (cargo-modules, installed on first use)
	@if ! cargo modules --version 2>/dev/null | grep -q $(CARGO_MODULES_VERSION); then \
	  $(CARGO) install --locked cargo-modules --version $(CARGO_MODULES_VERSION); fi
	cargo modules structure --lib --no-fns --no-traits --no-types

check-config: deps ## `tollgate check` every conf/*.yaml
	$(CARGO) build --locked --bin tollgate
	@status=0; for f in conf/*.yaml; do \
	  ./target/debug/tollgate check -c "$$f" || status=1; \
	done; exit $$status

bench: deps ## benches (BENCH=hot_path|jwt|llm|memory|report for one)
	$(CARGO) bench --locked $(if $(BENCH),--bench $(BENCH))

clean: ## remove build output
	$(CARGO) clean
