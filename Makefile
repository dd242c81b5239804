# Every target sets up .venv first (make install), so two commands work on a new machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SEEDS := 0,1,2,3,4

.PHONY: install test lint demo bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $@

test: install
	WANDB_MODE=disabled $(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check lerac tests scripts
	$(VENV)/bin/ruff format --check lerac tests scripts

# Conventional vs LeRaC on digits, 5 seeds each, then accuracy mean ± std per regime
# and a plot of validation accuracy per epoch (outputs/demo/val_accuracy.png).
demo: install
	$(PY) -m lerac.train -m experiment=demo regime=conventional,lerac seed=$(SEEDS)
	$(PY) -m lerac.report outputs/demo --csv outputs/demo/summary.csv
	$(PY) -m lerac.plots outputs/demo

# Step-time ratios, loader speedup, throughput against the goals -> results/benchmark.json
# (BENCH_QUICK=1: the quick size, under 10 minutes on 2 CPU cores).
bench: install
	$(PY) scripts/bench.py

clean:
	rm -rf outputs multirun wandb .pytest_cache
