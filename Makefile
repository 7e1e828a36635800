# sts — `make serve` and `make test` set everything up from a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
PORT   ?= 8500
# `make serve` listens on loopback only; HOST=0.0.0.0 for every interface (the CLI and the
# containers keep the original's 0.0.0.0 default).
HOST   ?= 127.0.0.1
# A local wheel folder (the CPU torch wheel lives there on these machines); uv does not
# read pip's config, so it is passed on the command line, never written into pyproject.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels)
UV_INSTALL = $(UV) pip install --quiet --python $(BIN)/python $(FIND_LINKS)

# MXNet 1.9.1 needs numpy < 1.24, which TensorFlow cannot share: a second environment
# with sts[mxnet] only. `make test` runs the MXNet tests there, and the API and core tests
# again, under numpy 1.23.
MX_VENV := .venv-mx
MX_BIN  := $(MX_VENV)/bin
MX_INSTALL = $(UV) pip install --quiet --python $(MX_BIN)/python $(FIND_LINKS)
MX_TESTS := tests/backends/test_mxnet_backend.py tests/backends/test_mxnet_environment.py \
	tests/test_backend_contract.py tests/test_versions.py tests/test_garbage.py \
	tests/protocols/sts/test_routes.py tests/protocols/sts/test_codec.py \
	tests/protocols/tfserving/test_routes.py tests/protocols/tfserving/test_codec.py \
	tests/protocols/tfserving/test_example.py \
	tests/protocols/v2/test_routes.py tests/protocols/v2/test_codec.py \
	tests/test_codecs.py tests/test_images.py tests/test_config.py tests/test_repository.py \
	tests/test_service.py tests/test_batching.py tests/test_hot_reload.py tests/test_metrics.py \
	tests/test_security.py tests/backends/test_onnx_backend.py \
	tests/optimize/test_optimize_mxnet.py

# What the tests run: Go (Debian's golang-go), Node 18+ and curl for the generated
# clients, Debian's chromium for the dashboard (driven by Playwright, never its download),
# strace and ip (iproute2) for the test that the server reaches nothing beyond loopback.
# The h2o and pmml platforms run on a JVM in the server's process (JPype): a headless JRE
# unless Java is already there (JAVA_HOME or java on PATH).
MISSING_JAVA := $(if $(or $(JAVA_HOME),$(shell command -v java)),,default-jre-headless)
MISSING_TOOLS := $(strip $(if $(shell command -v go),,golang-go) $(if $(shell command -v node),,nodejs) $(if $(shell command -v curl),,curl) $(if $(wildcard /usr/bin/chromium),,chromium) $(if $(shell command -v strace),,strace) $(if $(shell command -v ip),,iproute2) $(MISSING_JAVA))
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: help serve serve-mxnet test test-main test-mxnet lint tools java bench bench-quick soak examples protos clean

help:
	@echo "make serve     install and serve examples/models on $(HOST):$(PORT) (make serve HOST=0.0.0.0 PORT=9000)"
	@echo "make serve-mxnet  the same in the MXNet environment (.venv-mx, numpy < 1.24)"
	@echo "make test      install everything, lint, and run the whole test suite (both environments)"
	@echo "make lint      ruff and mypy"
	@echo "make bench     sts against MLServer, bare FastAPI and the runtime in-process (~20 min)"
	@echo "make bench-quick  the headline ratios only (<= 2 minutes)"
	@echo "make soak      the bench, then 10 minutes of load with a reload every 30 s"
	@echo "make examples  retrain the example models (outputs are committed)"
	@echo "make protos    regenerate sts/protos/descriptors.binpb (the gRPC schemas)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(UV): | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv

# TF Serving's message definitions (its model config file format; its official Python
# client in tests). Its package declares full `tensorflow`, which must never land beside
# `tensorflow-cpu`: installed without dependencies.
TFS_API := tensorflow-serving-api==2.21.0

$(VENV)/.serve-installed: pyproject.toml | $(UV)
	$(UV_INSTALL) -e '.[onnx,tensorflow,torch,pmml,h2o,sklearn,xgboost,lightgbm]'
	touch $@

# TF Serving's official Python client (tests and `make protos`). Its package declares full
# `tensorflow`, which must never land beside `tensorflow-cpu`: installed without dependencies.
TFS_API := tensorflow-serving-api==2.21.0

$(VENV)/.test-installed: pyproject.toml | $(UV)
	$(UV_INSTALL) -e '.[onnx,tensorflow,torch,pmml,h2o,sklearn,xgboost,lightgbm,tabular-convert,optimize,test,test-remote,dev]'
	$(UV_INSTALL) --no-deps '$(TFS_API)'
	# KServe's schema models for tests/test_deploy.py, without its serving dependencies.
	$(UV_INSTALL) --no-deps 'kserve==0.21.0'
	touch $@ $(VENV)/.serve-installed

# Every package's bytecode, compiled once after the installs: uv, unlike pip, leaves it to
# the first import, and where PYTHONDONTWRITEBYTECODE is set (these machines set it) every
# start compiles TensorFlow's, torch's and scikit-learn's sources again: ~13 of the 30 CPU
# seconds of `make serve`'s start-up. Files written for other Python versions fail to
# compile (torch ships a few): ignored, as uv's --compile-bytecode ignores them.
$(VENV)/.bytecode: $(VENV)/.serve-installed $(wildcard $(VENV)/.test-installed $(VENV)/.bench-installed)
	-$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib
	touch $@

$(MX_BIN)/python:
	$(PYTHON) -m venv $(MX_VENV)

$(MX_VENV)/.serve-installed: pyproject.toml | $(MX_BIN)/python $(UV)
	$(MX_INSTALL) -e '.[mxnet,onnx]'
	touch $@

$(MX_VENV)/.test-installed: pyproject.toml | $(MX_BIN)/python $(UV)
	$(MX_INSTALL) -e '.[mxnet-convert,onnx,test]'
	touch $@ $(MX_VENV)/.serve-installed

serve: $(VENV)/.serve-installed $(VENV)/.bytecode java
	$(BIN)/sts --model_config_file examples/models.json --host $(HOST) --port $(PORT)

serve-mxnet: $(MX_VENV)/.serve-installed
	$(MX_BIN)/sts --model_config_file examples/models-mxnet.json --host $(HOST) --port $(PORT)

test: test-main test-mxnet

# tritonclient[grpc] caps protobuf below 7, which TensorFlow's environment cannot share:
# the KServe v2 gRPC client tests run it from here, as a subprocess.
TRITON_VENV := .venv-triton

$(TRITON_VENV)/.installed: | $(UV)
	$(PYTHON) -m venv $(TRITON_VENV)
	$(UV) pip install --quiet --python $(TRITON_VENV)/bin/python 'tritonclient[grpc]>=2.40'
	touch $@

test-main: lint tools $(TRITON_VENV)/.installed $(VENV)/.bytecode
	$(BIN)/python -m pytest

test-mxnet: $(MX_VENV)/.test-installed | $(VENV)/.test-installed
	STS_MAIN_PYTHON=$(abspath $(BIN)/python) $(MX_BIN)/python -m pytest $(MX_TESTS)

java:
ifneq ($(MISSING_JAVA),)
	$(SUDO) apt-get update -q
	$(SUDO) apt-get install -y -q --no-install-recommends $(MISSING_JAVA)
endif

tools:
ifneq ($(MISSING_TOOLS),)
	$(SUDO) apt-get update -q
	$(SUDO) apt-get install -y -q --no-install-recommends $(MISSING_TOOLS)
endif

lint: $(VENV)/.test-installed
	$(BIN)/ruff check sts tests examples
	$(BIN)/ruff format --check sts tests examples
	$(BIN)/mypy

$(VENV)/.bench-installed: pyproject.toml | $(VENV)/.test-installed
	$(UV_INSTALL) -e '.[onnx,tensorflow,torch,sklearn,xgboost,lightgbm,tabular-convert,optimize,test,dev,bench]'
	touch $@

# MLServer, the bench's peer, pins its own FastAPI, gRPC and protobuf: its own environment,
# with the ONNX Runtime version sts's environment has (benchmarks/mlserver_runtime.py).
# uvloop < 0.22: with 0.22 MLServer 1.7.1's inference workers die at start (MLServer
# issue 2286, "There is no current event loop"), so its default parallel_workers=1 fails.
ML_VENV := .venv-mlserver
MLSERVER_VERSION := 1.7.1

$(ML_VENV)/.installed: | $(VENV)/.bench-installed
	$(PYTHON) -m venv $(ML_VENV)
	$(UV) pip install --quiet --python $(ML_VENV)/bin/python 'mlserver==$(MLSERVER_VERSION)' 'uvloop<0.22' \
		"onnxruntime==$$($(BIN)/python -c 'import onnxruntime; print(onnxruntime.__version__)')"
	touch $@

WRK := command -v wrk >/dev/null || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q wrk)

# The whole bench (~20 minutes): the headline points of issues 18 and 22 against MLServer,
# a bare FastAPI endpoint and the in-process floor, every earlier scenario, loading while
# serving, start-up of the example set, big bodies, then the tabular and MXNet benches.
bench: $(VENV)/.bench-installed $(VENV)/.bytecode $(ML_VENV)/.installed $(MX_VENV)/.test-installed java
	@$(WRK)
	$(BIN)/python benchmarks/bench.py
	$(BIN)/python benchmarks/bench_tabular.py
	$(MX_BIN)/python benchmarks/bench_mxnet.py

# The headline ratios only (<= 2 minutes), for development.
bench-quick: $(VENV)/.bench-installed $(VENV)/.bytecode $(ML_VENV)/.installed
	@$(WRK)
	$(BIN)/python benchmarks/bench.py --quick

soak: $(VENV)/.bench-installed $(VENV)/.bytecode $(ML_VENV)/.installed
	@$(WRK)
	$(BIN)/python benchmarks/bench.py --seconds 2 --long 5 --soak 600

examples: $(VENV)/.test-installed $(MX_VENV)/.test-installed java
	$(BIN)/python examples/build_models.py
	$(UV_INSTALL) -e '.[onnx,tensorflow,torch,pmml,h2o,h2o-build,test,dev]'
	$(BIN)/python examples/build_jvm_models.py
	$(MX_BIN)/python examples/build_mxnet_models.py

# sts/protos/descriptors.binpb: the gRPC schemas, from the installed packages' descriptors
# (and TF Serving's BatchingParameters, which no package ships, declared in sts/protos/generate.py).
protos: $(VENV)/.test-installed
	$(BIN)/python -m sts.protos.generate

clean:
	rm -rf $(VENV) $(MX_VENV) $(TRITON_VENV) $(ML_VENV) .pytest_cache .ruff_cache .mypy_cache dist build
