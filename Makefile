# insightface-align: every install step lives here so a clean machine needs only
# `make test` and `make demo`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# MXNet build: CUDA 11.2 when an NVIDIA GPU is visible, CPU otherwise (override: MXNET=cpu|gpu).
MXNET ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP := $(VENV)/.installed-$(MXNET)
# The project's compiled MXNet operators (docs/compiled-operators.md): any x86-64 CPU, AVX-512 kernels
# chosen at run time.
EXT := insightface_align/symbols/ext/libsdu_ops.so
GL_STAMP := $(VENV)/.gl-ok
INSTALLED := $(STAMP) $(EXT) $(GL_STAMP)
FAN_VENV := .venv-fan
FAN_STAMP := $(FAN_VENV)/.installed
DLIB_VENV := .venv-dlib
DLIB_STAMP := $(DLIB_VENV)/.installed
RELEASE_VENV := .venv-release
RELEASE_STAMP := $(RELEASE_VENV)/.installed
# A checkout of github.com/deepinsight/insightface for make fidelity.
RELEASE_DIR ?= ../insightface
# Tests run in one process with one OpenMP thread and MXNet's NaiveEngine (operators run synchronously).
TEST_ENV := OMP_NUM_THREADS=1 MXNET_ENGINE_TYPE=NaiveEngine
# Jobs use one OpenMP thread per core. Left unset, MXNet picks fewer on small machines (the demo
# trained 1.5x slower), and oneDNN's results depend on the thread count (docs/training.md).
THREADS ?= $(shell nproc)
RUN_ENV := OMP_NUM_THREADS=$(THREADS)

# Data and training knobs (make train-2d DATA=data/2d GPUS=0,1 RECIPE=sdu-2d).
DATA ?=
GPUS ?=
CPUS ?= 1
RECIPE ?=
SYNTH_TRAIN ?= 2000
SYNTH_TEST ?= 300
WORKERS ?= 2
# Checkpoints averaged into the packaged bundled model (make snapshot-bundled).
AVERAGE ?= 4
# The suite runs one test file per worker process (pytest-xdist), one OpenMP thread each.
TEST_WORKERS ?= $(WORKERS)
DEVICES = $(if $(GPUS),--gpus $(GPUS),--cpus $(CPUS))

.PHONY: test-faults fidelity real-faces dlib-gauge data-synth-big train-bundled snapshot-bundled install test demo bench bench-data bench-synth fan-gauge data-synth data-synth-2d data-synth-3d data-2d data-3d \
	train-2d train-3d stats clean help

help:
	@echo "make help                 this list"
	@echo "make install              .venv with the pinned packages, the package (editable), the CPU operators"
	@echo "make test                 install into .venv and run the test suite"
	@echo "make test-faults          kills and races against the real tools (slow; CI runs it after make test)"
	@echo "make demo                 synthetic data -> train the demo recipe on CPU -> evaluate -> export -> runs/demo/"
	@echo "make data-synth           synthetic 2D and 3D sets packed into data/synth2d and data/synth3d"
	@echo "make data-2d DATA=DIR     pack real 2D benchmark folders into data/2d"
	@echo "make data-3d DATA=DIR     pack 300W-LP / AFLW2000-3D into data/3d"
	@echo "make train-2d [DATA=data/2d] [GPUS=0,1] [RECIPE=sdu-2d]   (no DATA: synthetic set)"
	@echo "make train-3d [DATA=data/3d] [GPUS=0,1] [RECIPE=sdu-3d]   (no DATA: synthetic set)"
	@echo "make data-synth-big       the bundled model's rendered training set (BIG_COUNT=100000, resumable)"
	@echo "make train-bundled        train / continue the bundled model (insightface_align/recipes/bundled-2d.yaml)"
	@echo "make snapshot-bundled     newest checkpoint into training/, mean of the newest AVERAGE into the package"
	@echo "make stats                Table 1 of the paper for every recipe"
	@echo "make bench                benchmarks (slow; not part of the tests), with the FAN gauge"
	@echo "make fan-gauge            .venv-fan: torch + face-alignment, the 4-stack FAN 'bench.py infer' times"
	@echo "make real-faces           real-photo benchmark of the bundled model and the detectors -> docs/real-faces.md"
	@echo "make fidelity             the release's iterator, test_rec_nme.py and Handler beside ours (RELEASE_DIR=checkout)"
	@echo "make dlib-gauge           .venv-dlib: dlib's 68-point predictor, the reference column of make real-faces"
	@echo "make bench-data           training-iterator throughput (samples/s) and where its time goes"
	@echo "make bench-synth          synthetic-face generator and packer speed, and the time of a 100,000-face set"
	@echo "make clean                remove .venv, build artefacts, caches and the compiled operators (keeps data/, runs/)"

install: $(INSTALLED)

# Offscreen OpenGL for the synthetic-face renderer: Mesa's EGL and llvmpipe (Debian packages).
GL_PACKAGES := libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri libgbm1
$(GL_STAMP):
	@mkdir -p $(VENV)
	@if ldconfig -p | grep -q libEGL_mesa.so.0 && ldconfig -p | grep -q 'libGL.so.1 '; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Mesa (offscreen OpenGL): $(GL_PACKAGES)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(GL_PACKAGES) >/dev/null; \
	else echo "error: the synthetic renderer needs Mesa's EGL: install $(GL_PACKAGES) (as root)"; exit 2; fi
	touch $@

# The build rebuilds when the sources' content changed (its build record's hash), else says "up to date";
# `touch -c` then keeps make from asking again.
$(EXT): $(wildcard insightface_align/symbols/ext/*.cc insightface_align/symbols/ext/*.h) | $(STAMP)
	$(PY) -m insightface_align.symbols.ext --check
	touch -c $@

$(STAMP): requirements/common.txt requirements/test.txt requirements/$(MXNET).txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -r requirements/$(MXNET).txt -r requirements/common.txt -r requirements/test.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	$(PY) -c "import mxnet, cv2, numpy; print('mxnet', mxnet.__version__, 'numpy', numpy.__version__, 'cv2', cv2.__version__)"
	touch $@

test: $(INSTALLED)
	$(TEST_ENV) $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not faults" tests

test-faults: $(INSTALLED)
	$(TEST_ENV) $(PY) -m pytest -q -m faults tests

demo: $(INSTALLED)
	$(RUN_ENV) $(PY) tools/demo.py --out runs/demo --data data/synth2d --workers $(WORKERS)

data-synth: data-synth-2d data-synth-3d

data/synth2d/train.rec data-synth-2d: | $(STAMP)
	$(PY) tools/make_synthetic.py --mode 2d --out data/synth2d-raw/train --count $(SYNTH_TRAIN) --seed 1 --workers $(WORKERS) --overwrite
	$(PY) tools/make_synthetic.py --mode 2d --out data/synth2d-raw/test --count $(SYNTH_TEST) --seed 2 --workers $(WORKERS) --overwrite
	$(PY) tools/pack_rec.py --format 300w --input data/synth2d-raw/train --output data/synth2d --name train --workers $(WORKERS)
	$(PY) tools/pack_rec.py --format 300w --input data/synth2d-raw/test --output data/synth2d --name test --workers $(WORKERS)

data/synth3d/train.rec data-synth-3d: | $(STAMP)
	$(PY) tools/make_synthetic.py --mode 3d --out data/synth3d-raw/train --count $(SYNTH_TRAIN) --seed 3 --workers $(WORKERS) --overwrite
	$(PY) tools/make_synthetic.py --mode 3d --out data/synth3d-raw/test --count $(SYNTH_TEST) --seed 4 --workers $(WORKERS) --overwrite
	$(PY) tools/pack_rec.py --format aflw2000 --input data/synth3d-raw/train --output data/synth3d --name train --workers $(WORKERS)
	$(PY) tools/pack_rec.py --format aflw2000 --input data/synth3d-raw/test --output data/synth3d --name aflw2000_synth --workers $(WORKERS)

# The bundled model's data: BIG_COUNT rendered 2D faces in resumable 5,000-face chunks
# (rerun to continue), a 500-face test set, all packed into data/synth2d-big.
BIG_COUNT ?= 100000
data-synth-big: $(INSTALLED)
	tools/make_synthetic_big.sh data/synth2d-big-raw $(BIG_COUNT) 5000 101 $(WORKERS)
	test -d data/synth2d-big-raw-test || $(PY) tools/make_synthetic.py --mode 2d --out data/synth2d-big-raw-test \
		--count 500 --seed 202 --workers $(WORKERS)
	$(PY) tools/pack_rec.py --format 300w --input data/synth2d-big-raw/part?????? --output data/synth2d-big \
		--name train --workers $(WORKERS)
	$(PY) tools/pack_rec.py --format 300w --input data/synth2d-big-raw-test --output data/synth2d-big \
		--name test --workers $(WORKERS)

# Train (or continue training) the bundled model; a fresh clone continues from the
# committed snapshot in training/bundled-2d. snapshot-bundled copies the newest
# checkpoint back into the repository (training/) and packages the mean of the newest
# AVERAGE checkpoints (models/; tools/snapshot_bundled.py --average).
train-bundled: $(INSTALLED)
	test -f runs/bundled-2d/model-latest.json || { mkdir -p runs && cp -r training/bundled-2d runs/bundled-2d 2>/dev/null || true; }
	$(RUN_ENV) $(PY) tools/train.py --recipe bundled-2d --data data/synth2d-big --val test --cpus 1 \
		--num-workers $(WORKERS) --out runs/bundled-2d --resume --no-progress

snapshot-bundled: $(INSTALLED)
	$(PY) tools/snapshot_bundled.py --run runs/bundled-2d --average $(AVERAGE)

data-2d: $(INSTALLED)
	@test -n "$(DATA)" || { echo "usage: make data-2d DATA=/path/to/benchmark/folders"; exit 2; }
	$(PY) tools/pack_rec.py --auto 2d --input $(DATA) --output data/2d --workers $(WORKERS)

data-3d: $(INSTALLED)
	@test -n "$(DATA)" || { echo "usage: make data-3d DATA=/path/to/300W_LP-and-AFLW2000"; exit 2; }
	$(PY) tools/pack_rec.py --auto 3d --input $(DATA) --output data/3d --workers $(WORKERS)

train-2d: $(INSTALLED) $(if $(DATA),,data/synth2d/train.rec)
	$(RUN_ENV) $(PY) tools/train.py --recipe $(or $(RECIPE),sdu-2d) --data $(or $(DATA),data/synth2d) $(DEVICES) \
		$(if $(DATA),,--val test) --num-workers $(WORKERS)

train-3d: $(INSTALLED) $(if $(DATA),,data/synth3d/train.rec)
	$(RUN_ENV) $(PY) tools/train.py --recipe $(or $(RECIPE),sdu-3d) --data $(or $(DATA),data/synth3d) $(DEVICES) \
		$(if $(DATA),,--val aflw2000_synth) --num-workers $(WORKERS)

stats: $(INSTALLED)
	$(RUN_ENV) $(PY) tools/model_stats.py --markdown docs/benchmarks.md

bench: $(INSTALLED) $(FAN_STAMP)
	$(RUN_ENV) $(PY) tools/bench.py dcn --markdown docs/benchmarks.md
	$(RUN_ENV) $(PY) tools/bench.py dcn --mean-impl standard --variants none fast portable --markdown docs/benchmarks.md
	$(RUN_ENV) $(PY) tools/bench.py train --markdown docs/benchmarks.md
	$(RUN_ENV) $(PY) tools/bench.py infer --fan-python $(FAN_VENV)/bin/python --markdown docs/benchmarks.md

# PyTorch + face-alignment in a venv of their own (1.6 GB; bench only, never next to MXNet).
fan-gauge: $(FAN_STAMP)

# A benchmark gauge's own venv: $(call gauge-venv,VENV,REQUIREMENTS,CHECK-VARIABLE), where the
# variable holds the Python code that checks the install (a variable: the code contains commas).
FAN_CHECK := import torch, face_alignment.models; print('torch', torch.__version__)
DLIB_CHECK := import dlib, face_recognition_models; print('dlib', dlib.__version__)
RELEASE_CHECK := import mxnet, easydict, sklearn, skimage; print('mxnet', mxnet.__version__)
define gauge-venv
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --disable-pip-version-check -q --no-deps -r $(2)
	$(1)/bin/python -c "$($(3))"
	touch $@
endef

$(FAN_STAMP): requirements/fan-gauge.txt
	$(call gauge-venv,$(FAN_VENV),$<,FAN_CHECK)

bench-data: $(INSTALLED) data/synth2d/train.rec
	$(RUN_ENV) $(PY) tools/bench_data.py --rec data/synth2d/train.rec --markdown docs/benchmarks.md

bench-synth: $(INSTALLED)
	$(PY) tools/bench_synth.py --markdown docs/benchmarks.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache $(EXT)

real-faces: $(INSTALLED)
	$(RUN_ENV) $(PY) tools/real_faces.py --markdown docs/real-faces.md --json runs/real-faces.json

dlib-gauge: $(DLIB_STAMP)

$(DLIB_STAMP): requirements/dlib-gauge.txt
	$(call gauge-venv,$(DLIB_VENV),$<,DLIB_CHECK)

fidelity: $(INSTALLED) $(RELEASE_STAMP)
	$(RUN_ENV) $(PY) tools/fidelity.py --release $(RELEASE_DIR) --release-python $(RELEASE_VENV)/bin/python \
		--markdown docs/fidelity.md

$(RELEASE_STAMP): requirements/release-gauge.txt requirements/cpu.txt requirements/common.txt
	$(call gauge-venv,$(RELEASE_VENV),$<,RELEASE_CHECK)
