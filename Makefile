# cloudtap: the two commands that matter are `make demo` and `make test`.
# Both set everything up on a fresh Debian machine (as root) and are idempotent.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.cloudtap-installed
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba-cache

APT_PACKAGES := tshark tcpdump tcpreplay nfdump softflowd argus-server argus-client \
	libpcap0.8-dev iproute2 iperf3 python3-venv golang-go golang-github-vmware-govmomi-dev chromium \
	prometheus postgresql
# (after APT_PACKAGES: := expands at once)
APT_STAMP := /var/lib/cloudtap-apt-$(shell echo $(APT_PACKAGES) | md5sum | cut -c1-8)
CONSOLE_DIST := src/cloudtap/server/console/dist
CONSOLE_STAMP := $(CONSOLE_DIST)/index.html
CONSOLE_SOURCES := $(shell find web/src -type f 2>/dev/null) web/index.html web/vite.config.ts web/tsconfig.json

.PHONY: demo test setup system-deps console node bench lint clean

demo: setup
	$(PY) -m cloudtap.demo

test: setup
	$(VENV)/bin/pytest -q --durations=40 tests

bench: setup
	$(PY) bench/meter/run.py
	$(PY) bench/meter/whole_process.py
	$(PY) bench/capture/read_speed.py
	$(PY) bench/agent/ring_drain.py
	$(PY) bench/agent/live_rate.py
	$(PY) bench/agent/footprint.py
	$(PY) bench/server/run.py

lint: setup
	$(VENV)/bin/ruff check src tests bench scripts

setup: system-deps $(STAMP) console

# The web console (web/): Vue + Vite, from the npm lockfile, built into the Python package.
console: $(CONSOLE_STAMP)

$(CONSOLE_STAMP): web/package-lock.json $(CONSOLE_SOURCES) | node
	cd web && SCARF_ANALYTICS=false npm ci --no-audit --no-fund --loglevel=error && npm run build --silent

# Node.js 18+ and npm: Debian's when the machine has none.
node:
	@command -v npm >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; } || \
		{ echo "the console needs Node.js 18+ and npm"; exit 1; }

system-deps: $(APT_STAMP)

$(APT_STAMP):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null && touch $@; \
	else echo "not root or no apt-get: skipping system packages ($(APT_PACKAGES))"; fi

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -U pip
	$(PIP) install -q -e '.[agent,server,dev]'
	@touch $@

clean:
	rm -rf $(VENV) .numba-cache .pytest_cache build *.egg-info web/node_modules $(CONSOLE_DIST)
