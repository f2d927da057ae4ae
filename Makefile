# posttrain — every set-up step a fresh machine needs. `make demo` and `make test` do it all.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install test test-slow test-all demo demo-fast quickstart bench lint docs clean

install: $(STAMP)

# torch first, from the CPU build: a bare `torch` requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[train,curate,ray,postgres,dev]'
	touch $(STAMP)

# the default suite in parallel (pytest-xdist: one worker per core, at most 4); the slow one in order
test: install
	$(PY) -m pytest -m "not slow" -n auto --maxprocesses 4 $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest $(PYTEST_ARGS)

# the flywheel end to end on the simulated product; each run gets a fresh project under demo-runs/
demo: install
	$(VENV)/bin/posttrain demo --project demo-runs/$$(date +%Y%m%d-%H%M%S)

demo-fast: install
	$(VENV)/bin/posttrain demo --fast --project demo-runs/fast-$$(date +%Y%m%d-%H%M%S)

# the walk-throughs of the guides (docs/guides): capture, training, annotation, curation
quickstart: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/quickstart.sh
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/train_quickstart.sh
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/annotate_quickstart.sh
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/curate_quickstart.sh

bench: install
	$(PY) benchmarks/ingest_http.py
	$(PY) benchmarks/import_bulk.py
	$(PY) benchmarks/build_datasets.py
	$(PY) benchmarks/curation.py
	$(PY) benchmarks/pii.py
	cd benchmarks && ../$(PY) console.py
	$(PY) benchmarks/train_sft.py
	$(PY) benchmarks/ab_sequential.py
	$(PY) benchmarks/gateway.py

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy src

docs: install
	$(PY) -m posttrain.reference docs/reference

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache demo-runs
