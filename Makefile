# The two commands of the README. Both set up everything they need on a fresh machine.
#   make demo   generate, apply and materialise three regions on the embedded default (SQLite)
#   make test   the whole test suite against real redis-server processes, headless Chromium and buf (installed if missing)

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test bench venv redis-server chromium h2load proto buf

# buf (lint and breaking-change checks of proto/), from the npm registry into .tools/, pinned: its rules
# change between releases. The breaking check compares with the shipped descriptor set (the last
# release's contracts); once releases are tagged: make buf BUF_AGAINST='.git#tag=vX.Y.Z,subdir=proto'
BUF_VERSION ?= 1.75.0
BUF         := .tools/buf-$(BUF_VERSION)/node_modules/.bin/buf
BUF_AGAINST ?= proto/fedstore.binpb

$(BIN)/fedstore: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or make PYTHON=/path/to/python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

venv: $(BIN)/fedstore

redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server not found: installing it with apt-get"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }

chromium:
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || { \
	  echo "chromium or chromedriver not found: installing them with apt-get (the dashboard tests' browser)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

demo: venv
	$(BIN)/fedstore demo

$(BUF):
	@command -v npm >/dev/null 2>&1 || { \
	  echo "npm not found: installing it with apt-get (buf is installed from the npm registry)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq npm >/dev/null; }
	npm install --prefix .tools/buf-$(BUF_VERSION) --no-save --no-audit --no-fund --loglevel=error @bufbuild/buf@$(BUF_VERSION)
	@$(BUF) --version >/dev/null

buf: $(BUF)
	$(BUF) lint
	$(BUF) breaking --against '$(BUF_AGAINST)'

test: venv redis-server chromium $(BUF)
	@echo "make test: the whole suite against real redis-server processes; about 20 minutes on an idle 2-core machine, up to 30 on a busy one"
	$(BIN)/python -m pytest

h2load:
	@command -v h2load >/dev/null 2>&1 || { \
	  echo "h2load not found: installing nghttp2-client with apt-get (the online benchmark's load generator)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nghttp2-client >/dev/null; }

bench: venv redis-server h2load chromium
	$(BIN)/python benchmarks/materialize.py
	$(BIN)/python benchmarks/online.py
	$(BIN)/python benchmarks/online.py --http --entities 20000 --seconds 3
	$(BIN)/python benchmarks/scoring.py
	$(BIN)/python benchmarks/outage.py
	$(BIN)/python benchmarks/offline.py
	$(BIN)/python benchmarks/global_training.py
	$(BIN)/python benchmarks/scale.py
	$(BIN)/python benchmarks/dashboard.py

proto: venv
	$(BIN)/python -m fedstore.proto.generate
