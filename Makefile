# Every target sets up .venv first (make install), so two commands work on a new machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SEEDS := 0,1,2,3,4
TABLES := 2 3 4 5 9 10 11 12 13
ANALYSIS_TABLES := 6 7 8
# make reproduce-table2 DRY=1 (list, count, plan; GPU=h100|h200|a100 for the estimate) |
# SMOKE=1 (2 batches, 2 epochs, k=1, own folder) | SMOKE=synthetic (the same on small
# synthetic data in the real formats) | BLOCK=<name> (one block of the grid) |
# ARGS="hydra/launcher=gpus ..." (overrides)
truthy = $(filter 1 true yes,$(1))
GRID_FLAGS = $(if $(call truthy,$(DRY)),--dry) $(if $(call truthy,$(SMOKE)),--smoke) \
	$(if $(filter synthetic,$(SMOKE)),--smoke --synthetic) \
	$(if $(BLOCK),--block $(BLOCK)) $(if $(GPU),--gpu $(GPU))
# make data DATASETS="cifar10 esc50" (default: all that can be downloaded) | CHECK=1
DATASETS ?= all

.PHONY: install test test-wheels test-cluster lint docs demo bench data clean gpu-wheels \
	reproduce-controls reproduce-protocol reproduce-analysis \
	$(addprefix reproduce-table,$(TABLES) $(ANALYSIS_TABLES))

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[suite,hf,lightning,timm,dev]"
	touch $@

# No network in tests: W&B off, the HuggingFace hub and datasets offline.
test: install
	WANDB_MODE=disabled HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q

# The package as a user gets it: build the sdist and the wheel, then in a fresh venv install
# the wheel alone and run the README's scheduler example, then its suite extra and a
# one-epoch lerac-train on digits, configs from inside the wheel (scripts/check_wheels.sh;
# the suite's packages come from the package index).
test-wheels: install
	PY=$(PY) BASE_PYTHON=$(PYTHON) scripts/check_wheels.sh

# The grid on a real one-node SLURM (slurmctld + slurmd + munge on this machine, installed
# with apt when missing, needs root): a digits grid as a job array, one job requeued by
# USR1 mid-run and resumed, a rerun that submits nothing (tests/test_cluster.py; figures
# in outputs/test_cluster.json). Stops only the daemons it started.
SLURM_DIR ?= /tmp/lerac-slurm
test-cluster: install
	LERAC_SLURM_DIR=$(SLURM_DIR) scripts/slurm_up.sh
	status=0; SLURM_CONF=$(SLURM_DIR)/slurm.conf WANDB_MODE=disabled HF_HUB_OFFLINE=1 \
		HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -s -m slurm tests/test_cluster.py || status=$$?; \
		LERAC_SLURM_DIR=$(SLURM_DIR) scripts/slurm_down.sh; exit $$status

lint: install
	$(VENV)/bin/ruff check lerac tests scripts examples
	$(VENV)/bin/ruff format --check lerac tests scripts examples

# The documentation site (mkdocs.yml, docs/) into site/; --strict: a broken link fails.
docs: install
	$(VENV)/bin/mkdocs build --strict --quiet

# Conventional vs LeRaC on digits, 5 seeds each, then accuracy mean ± std per regime
# and a plot of validation accuracy per epoch (outputs/demo/val_accuracy.png).
# Conventional vs LeRaC on digits through the grid machinery (conf/experiment/demo.yaml):
# outputs/demo/report.md (mean ± std, McNemar) and outputs/demo/figures/.
demo: install
	$(PY) -m lerac.suite.grid demo $(GRID_FLAGS) $(ARGS)
	$(PY) -m lerac.suite.report outputs/demo --csv outputs/demo/summary.csv
	$(PY) -m lerac.suite.plots outputs/demo

# One paper table: run what is missing (completed runs are skipped), then write
# results/tableN.md and .csv beside the paper's numbers and results/figures/.
$(addprefix reproduce-table,$(TABLES)): reproduce-table%: install
	$(PY) -m lerac.suite.grid table$* $(GRID_FLAGS) $(ARGS)

# Controls the paper does not run (warmup, shuffled layer order): results/controls.md.
reproduce-controls: install
	$(PY) -m lerac.suite.grid controls $(GRID_FLAGS) $(ARGS)

# The paper's protocol against the released code's, each difference alone (docs/fidelity.md):
# results/protocol.md (BLOCK=digits: the CPU block, results/protocol_digits.md).
reproduce-protocol: install
	$(PY) -m lerac.suite.grid protocol $(GRID_FLAGS) $(ARGS)
	$(if $(call truthy,$(DRY)),,$(PY) -m lerac.suite.protocol_report --block $(or $(BLOCK),main) $(ARGS))

# The supplementary's evidence for why (docs/analysis.md): every layer probed during the runs
# of experiment=analysis, then results/tableN.md and .csv beside the paper's values (Table 6:
# the conventional runs only). reproduce-analysis: all three, the training pace and Figure 3
# (results/figures/analysis_*.png; IMAGES=<folder>: Figure 3's images). BLOCK=fashion_mnist:
# the CPU block, results/analysis_fashion_mnist.md.
$(addprefix reproduce-table,$(ANALYSIS_TABLES)): reproduce-table%: install
	$(PY) -m lerac.suite.grid analysis $(GRID_FLAGS) \
		$(if $(filter 6,$*),hydra.sweeper.params.regime=conventional) $(ARGS)
	$(if $(call truthy,$(DRY)),,$(PY) -m lerac.suite.analysis_report --tables $* \
		$(if $(BLOCK),--block $(BLOCK)) $(if $(call truthy,$(SMOKE)),--smoke) $(ARGS))

reproduce-analysis: install
	$(PY) -m lerac.suite.grid analysis $(GRID_FLAGS) $(ARGS)
	$(if $(call truthy,$(DRY)),,$(PY) -m lerac.suite.analysis_report $(if $(BLOCK),--block \
		$(BLOCK)) $(if $(call truthy,$(SMOKE)),--smoke) $(if $(IMAGES),--images $(IMAGES)) $(ARGS))

# Step-time ratios, loader speedup, throughput against the goals -> results/benchmark.json
# (BENCH_QUICK=1: the quick size, under 10 minutes on 2 CPU cores).
bench: install
	$(PY) scripts/bench.py

# The wheels a lent GPU machine lacks for scripts/gpu_check.sh (docs/performance.md), into
# .gpu-wheels/ (git-ignored; the device call carries it): Hydra and OmegaConf as published
# (pure Python, for the machine's CPython 3.12 as for this one), antlr4's runtime built
# here from its source archive (PyPI has no wheel of it). No venv needed.
GPU_WHEELS := .gpu-wheels
GPU_WHEEL_PINS := hydra-core==1.3.8 omegaconf==2.3.1
gpu-wheels:
	rm -rf $(GPU_WHEELS) && mkdir -p $(GPU_WHEELS)
	$(PYTHON) -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux_2_28_x86_64 -d $(GPU_WHEELS) $(GPU_WHEEL_PINS)
	$(PYTHON) -m pip wheel --no-deps -w $(GPU_WHEELS) antlr4-python3-runtime==4.9.3
	ls -l $(GPU_WHEELS)

# The data sets and checkpoints into paths.data_dir (lerac/suite/sources.yaml, docs/data.md).
data: install
	$(PY) -m lerac.suite.fetch $(DATASETS) $(if $(call truthy,$(CHECK)),--check)

clean:
	rm -rf outputs multirun wandb .pytest_cache
