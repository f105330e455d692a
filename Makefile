# insightface-align: every install step lives here so a clean machine needs only
# `make test` and `make demo`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# MXNet build: CUDA 11.2 when an NVIDIA GPU is visible, CPU otherwise (override: MXNET=cpu|gpu).
MXNET ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP := $(VENV)/.installed-$(MXNET)
# Tests use one OpenMP thread per process: two pytest workers fill the two cores.
TEST_ENV := OMP_NUM_THREADS=1 MXNET_ENGINE_TYPE=NaiveEngine

.PHONY: install test demo bench clean help

help:
	@echo "make test    install into .venv and run the test suite"
	@echo "make demo    synthetic data -> train the demo recipe on CPU -> evaluate -> report in runs/demo/"
	@echo "make bench   run the benchmarks (slow; not part of the tests)"

install: $(STAMP)

$(STAMP): requirements/common.txt requirements/test.txt requirements/$(MXNET).txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -r requirements/$(MXNET).txt -r requirements/common.txt -r requirements/test.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	$(PY) -c "import mxnet, cv2, numpy; print('mxnet', mxnet.__version__, 'numpy', numpy.__version__, 'cv2', cv2.__version__)"
	touch $@

test: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) tools/bench.py dcn

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
