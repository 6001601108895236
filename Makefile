# HERSR: two commands on a fresh machine.
#   make test  - set up .venv and run ruff + the whole pytest suite, then the numerics tests again
#                on other CPU kernel sets (test-dispatch)
#   make demo  - set up .venv, build the embedded dataset, train, test, table, picture
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.hersr-installed

.PHONY: setup test test-dispatch lint demo bench clean

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

# One pytest worker per core, each with one torch thread: the cores stay busy without OpenMP threads
# waiting on each other (see docs/reliability.md). A test file runs whole in one worker
# (--dist loadfile), so its module fixtures are built once.
PYTEST := OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto --dist loadfile

test: lint
	$(PYTEST) tests
	$(MAKE) --no-print-directory test-dispatch

# Float results depend on which CPU kernels run (AVX-512, AVX2 or plain; oneDNN's ISA likewise),
# so the float-sensitive tests (marker 'numerics') run again on the lower kernel sets, one thread
# each, whatever CPU this is. Pairs are ATEN_CPU_CAPABILITY:ONEDNN_MAX_CPU_ISA.
DISPATCH_LEVELS ?= $(if $(filter x86_64 amd64,$(shell uname -m)),avx2:AVX2 default:SSE41,default:)

test-dispatch: $(STAMP)
	@for level in $(DISPATCH_LEVELS); do \
	  aten=$${level%%:*}; isa=$${level#*:}; \
	  echo "numerics tests on ATen kernels '$$aten', oneDNN ISA '$${isa:-highest}', 1 thread"; \
	  env ATEN_CPU_CAPABILITY=$$aten $${isa:+ONEDNN_MAX_CPU_ISA=$$isa} \
	    $(PYTEST) -m numerics tests || exit 1; \
	done

demo: $(STAMP)
	$(VENV)/bin/hersr demo

bench: $(STAMP)
	$(VENV)/bin/hersr bench

clean:
	rm -rf $(VENV) experiments results tb_logger
