# The two commands of the README: `make demo` and `make test`. Each installs what
# it needs first; a second run reinstalls nothing (stamp files).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-$(shell sha1sum pyproject.toml | cut -c1-12)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: demo test lint bench sysdeps deps clean

sysdeps:
	@if ! (command -v fusermount3 >/dev/null && pkg-config --exists fuse3 2>/dev/null); then \
	  echo "installing fuse3 libfuse3-dev pkg-config"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 libfuse3-dev pkg-config >/dev/null; \
	fi

$(STAMP): pyproject.toml | sysdeps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,demo]'
	@rm -f $(VENV)/.stamp-*; touch $@

deps: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check vfs tests scripts
	$(VENV)/bin/mypy vfs tests scripts

bench: $(STAMP)
	$(PY) scripts/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
