# The two commands of the README: `make demo` and `make test`. Both set everything up on a fresh
# clone: a virtual environment in .venv, the package, and the system data (Fashion-MNIST, chromium)
# where apt-get is available.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export HF_HUB_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: demo test install install-test system-data bench clean gpu-check

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need Python 3.11 (python3.11 or python3 on PATH)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PIP) install -q -e ".[test]"
	touch $@ $(VENV)/.installed

# Debian ships the real Fashion-MNIST (our downstream classification set) and chromium (renders
# the report in a test). Skipped silently where apt-get or root is missing: those tests then skip.
system-data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] || [ ! -x /usr/bin/chromium ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist chromium >/dev/null; \
	  else echo "note: apt-get unavailable; Fashion-MNIST / chromium tests will be skipped"; fi; \
	fi

install: $(VENV)/.installed system-data
install-test: $(VENV)/.installed-test system-data

demo: install
	$(VENV)/bin/must demo

test: install-test
	$(PY) -m pytest -n 2 --dist loadgroup -q

# Every benchmark in one run (~17 min on a quiet 2-core CPU): benchmarks/results.json, written whole
# with the commit, time and machine, and the tables generated from it (docs/benchmarks.md). The
# bf16 accuracy check is a separate ~15-minute run after `make demo`: python -m benchmarks.bf16_accuracy
bench: install
	$(PY) benchmarks/run.py

# On a machine with one CUDA GPU: the tests marked `cuda` and a tiny demo with device=cuda, one
# line per check, under 8 minutes; without a GPU it says so and fails (docs/gpu.md). It installs
# nothing and checks this checkout's src/: GPU_PY is the venv's Python after `make install-test`,
# else the machine's own (a CUDA torch preinstalled, our other dependencies beside it).
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))
GPU_PRESET ?= tiny

gpu-check:
	PYTHONPATH="$(CURDIR)/src$${PYTHONPATH:+:$$PYTHONPATH}" $(GPU_PY) tests/cuda/gpu_check.py \
	  --preset $(GPU_PRESET) --out runs/gpu-check

clean:
	rm -rf $(VENV) runs
