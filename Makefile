# HERSR: two commands on a fresh machine.
#   make test  - set up .venv and run ruff + the whole pytest suite
#   make demo  - set up .venv, build the embedded dataset, train, test, table, picture
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.hersr-installed

.PHONY: setup test lint demo bench clean

setup: $(STAMP)

# Order matters: torch first (basicsr's setup imports it), then basicsr without build
# isolation, then this package in editable mode.
$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel "setuptools<81"
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q --no-build-isolation basicsr==1.4.2
	$(PIP) install -q -e ".[test]"
	touch $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(VENV)/bin/hersr demo

bench: $(STAMP)
	$(VENV)/bin/hersr bench

clean:
	rm -rf $(VENV) experiments results tb_logger
