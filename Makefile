# wxnet: `make run` starts the server; `make test` runs every check CI runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= var
# Debian packages the test suite needs (installed by `make sysdeps` when missing; root).
DEB_PACKAGES ?= nftables iproute2 chromium nodejs conntrack postgresql redis-server

.PHONY: install run test lint typecheck pytest sysdeps proto lock bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3-venv is missing; installing it"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv && \
	  $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

run: install
	$(BIN)/wxnet serve --data $(DATA)

sysdeps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "warning: not root; missing Debian packages:$$missing" >&2; fi; fi

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

pytest: install sysdeps
	$(BIN)/pytest -q $(PYTEST_ARGS)

test: lint typecheck pytest

# Regenerate the protobuf modules after editing src/wxnet/proto/wxnet.proto.
proto: install
	PATH=$(BIN):$$PATH $(BIN)/python -m grpc_tools.protoc -Isrc --python_out=src --mypy_out=src src/wxnet/proto/wxnet.proto

# Re-pin every installed package (run after changing dependencies in pyproject.toml).
lock: install
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^wxnet' > constraints.txt

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
