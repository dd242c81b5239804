# Every target sets up .venv first (make install), so two commands work on a new machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SEEDS := 0,1,2,3,4
TABLES := 2 3 4 5 9 10 11 12 13
# make reproduce-table2 DRY=1 (list, count, estimate) | SMOKE=1 (2 batches, 1 epoch, own
# folder) | BLOCK=<name> (one block of the grid) | ARGS="hydra/launcher=gpus ..." (overrides)
truthy = $(filter 1 true yes,$(1))
GRID_FLAGS = $(if $(call truthy,$(DRY)),--dry) $(if $(call truthy,$(SMOKE)),--smoke) \
	$(if $(BLOCK),--block $(BLOCK))

.PHONY: install test lint demo bench clean reproduce-controls reproduce-protocol $(addprefix reproduce-table,$(TABLES))

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $@

# No network in tests: W&B off, the HuggingFace hub and datasets offline.
test: install
	WANDB_MODE=disabled HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check lerac tests scripts
	$(VENV)/bin/ruff format --check lerac tests scripts

# Conventional vs LeRaC on digits, 5 seeds each, then accuracy mean ± std per regime
# and a plot of validation accuracy per epoch (outputs/demo/val_accuracy.png).
# Conventional vs LeRaC on digits through the grid machinery (conf/experiment/demo.yaml):
# outputs/demo/report.md (mean ± std, McNemar) and outputs/demo/figures/.
demo: install
	$(PY) -m lerac.grid demo $(GRID_FLAGS) $(ARGS)
	$(PY) -m lerac.report outputs/demo --csv outputs/demo/summary.csv
	$(PY) -m lerac.plots outputs/demo

# One paper table: run what is missing (completed runs are skipped), then write
# results/tableN.md and .csv beside the paper's numbers and results/figures/.
$(addprefix reproduce-table,$(TABLES)): reproduce-table%: install
	$(PY) -m lerac.grid table$* $(GRID_FLAGS) $(ARGS)

# Controls the paper does not run (warmup, shuffled layer order): results/controls.md.
reproduce-controls: install
	$(PY) -m lerac.grid controls $(GRID_FLAGS) $(ARGS)

# The paper's protocol against the released code's, each difference alone (docs/fidelity.md):
# results/protocol.md (BLOCK=digits: the CPU block, results/protocol_digits.md).
reproduce-protocol: install
	$(PY) -m lerac.grid protocol $(GRID_FLAGS) $(ARGS)
	$(if $(call truthy,$(DRY)),,$(PY) -m lerac.protocol_report --block $(or $(BLOCK),main) $(ARGS))

# Step-time ratios, loader speedup, throughput against the goals -> results/benchmark.json
# (BENCH_QUICK=1: the quick size, under 10 minutes on 2 CPU cores).
bench: install
	$(PY) scripts/bench.py

clean:
	rm -rf outputs multirun wandb .pytest_cache
