# wxnet: `make run` starts the server; `make test` runs every check CI runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= var
# Debian packages the test suite needs (installed by `make sysdeps` when missing; root):
# systemd for `systemd-analyze` (the unit tests), curl for the README's commands; gcc and
# python3-dev to compile the analyser's hot modules (mypyc; pure Python without them).
# mosquitto and ejabberd: the MQTT broker and the XMPP server that bench/mqtt_load.py and
# bench/xmpp_load.py measure as baselines (their tests in tests/bench run a small load
# through each, so the suite needs them too). The benches start their own private copies
# on free loopback ports; a system ejabberd that its package started (on a host with
# systemd or a runlevel; a container has neither) is stopped and disabled below.
BENCH_DEB_PACKAGES ?= mosquitto ejabberd
DEB_PACKAGES ?= nftables iproute2 chromium nodejs conntrack libpcap0.8 tshark systemd curl postgresql redis-server gcc python3-dev $(BENCH_DEB_PACKAGES)
# The analyser's hot modules, compiled by mypyc (packaging/build_accel.py) into
# build/accel/lib/; rebuilt only when one of these files changes. Without a C compiler
# the build says so and wxnet runs them as pure Python (same results, slower).
ACCEL_SRC := src/wxnet/_accel.py src/wxnet/analyze/loop.py src/wxnet/analyze/flows.py \
  src/wxnet/analyze/capture.py src/wxnet/classify/classifier.py src/wxnet/classify/dns.py \
  src/wxnet/proto/sniff.py src/wxnet/proto/value.py packaging/build_accel.py
# Run a second time with WXNET_PURE=1 (the pure-Python path) by `make pytest`.
PURE_TESTS ?= tests/analyze tests/classify tests/proto/test_sniff.py tests/cli/test_analyze_cmd.py \
  --ignore=tests/analyze/test_wireshark.py

.PHONY: install install-dev accel run test lint typecheck pytest sysdeps bench-deps proto lock bench wheel clean

# `make install`: the runtime only (what `make run` needs); `make install-dev` adds the
# development extras (pytest, mypy, ruff, grpcio-tools, playwright) that `make test` needs.
install: $(VENV)/.installed $(VENV)/.accel
install-dev: $(VENV)/.installed-dev $(VENV)/.accel
accel: $(VENV)/.accel

$(VENV)/bin/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3-venv is missing; installing it"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv && \
	  rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }

$(VENV)/.installed: pyproject.toml constraints.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install -q -c constraints.txt -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

$(VENV)/.accel: $(ACCEL_SRC) | $(VENV)/.installed
	$(BIN)/python packaging/build_accel.py
	@touch $@

run: install
	$(BIN)/wxnet serve --data $(DATA)

sysdeps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	    case " $$missing " in *" ejabberd "*) \
	      if [ -d /run/systemd/system ]; then systemctl disable --now -q ejabberd || true; \
	      else update-rc.d ejabberd disable >/dev/null 2>&1 || true; \
	        if [ -s /run/ejabberd/ejabberd.pid ]; then /etc/init.d/ejabberd stop || true; fi; fi;; \
	    esac; \
	  else echo "warning: not root; missing Debian packages:$$missing" >&2; fi; fi

# `make bench-deps`: only the Debian packages the benches need (the MQTT and XMPP
# baselines); `make sysdeps` installs them with the rest.
bench-deps:
	@$(MAKE) --no-print-directory sysdeps DEB_PACKAGES="$(BENCH_DEB_PACKAGES)"

lint: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install-dev
	$(BIN)/mypy

pytest: install-dev sysdeps
	$(BIN)/pytest -q $(PYTEST_ARGS)
	WXNET_PURE=1 $(BIN)/pytest -q $(PURE_TESTS)

# sysdeps first: the analyser's compiled modules (built with install-dev) need gcc.
test: sysdeps lint typecheck pytest

# Regenerate the protobuf modules after editing src/wxnet/proto/wxnet.proto.
proto: install-dev
	PATH=$(BIN):$$PATH $(BIN)/python -m grpc_tools.protoc -Isrc --python_out=src --mypy_out=src src/wxnet/proto/wxnet.proto

# Re-pin every installed package (run after changing dependencies in pyproject.toml).
lock: install-dev
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^wxnet' > constraints.txt

bench: install-dev bench-deps
	$(BIN)/python -m bench

# A wheel and an sdist in dist/ (what `pip install .` builds, with every runtime file:
# web page, signatures, proto). Calls setuptools' PEP 517 hooks directly: no download.
wheel: install
	rm -rf dist && $(BIN)/python -c "from setuptools import build_meta as b; \
	  print(b.build_sdist('dist')); print(b.build_wheel('dist'))"

clean:
	rm -rf $(VENV) build/accel .mypy_cache .pytest_cache .ruff_cache .hypothesis
