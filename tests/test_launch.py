"""The grid through Hydra launchers: SMOKE runs every curriculum to its end, the
submitit launcher (local executor: real job processes) receives only the missing runs,
and a job stopped by USR1 is requeued by submitit and resumes to the uninterrupted result.
The same on a real SLURM: tests/test_cluster.py (`make test-cluster`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lerac.suite import grid
from tests.conftest import compose_config

REPO = Path(__file__).resolve().parents[1]

# Digits at ResNet-18 width 4; a curriculum of 3 epochs, and a block of 4, both longer
# than SMOKE's 2 epochs: without SMOKE's k = 1 every curriculum run would be refused.
EXPERIMENT = """\
# @package _global_
defaults:
  - override /dataset: digits
  - override /logger: none
model: {{width: 4, table1: {{lerac_k: 3}}}}
trainer: {{max_epochs: 6, batch_size: 64, limit_train_batches: 3, limit_eval_batches: 1,
          device: cpu, progress: false, deterministic: true}}
paths: {{output_dir: {out}}}
grid:
  title: Launch
  paper: null
  reference: conventional
  blocks:
    k4: {{regime: lerac, regime.k: 4, tag: k4}}
hydra:
  sweeper:
    params:
      regime: conventional,lerac
      seed: 0
"""
CONVENTIONAL, LERAC, K4 = (
    f"digits_resnet18_{name}_seed0" for name in ("conventional", "lerac", "lerac_k4")
)
# Sent to a job through sitecustomize (PYTHONPATH): after the run's first checkpoint, the
# job process signals itself once, at a known point of the run, with no polling.
SIGNAL_AFTER_FIRST_CHECKPOINT = """\
import os
if os.environ.get("SUBMITIT_LOCAL_GLOBALID") is not None:  # a submitit task, not the test
    import signal
    from lerac.engine.checkpoint import Checkpoint
    save, mark = Checkpoint.save, os.environ["LERAC_TEST_SIGNALLED"]
    def save_then_signal(self, state):
        save(self, state)
        if not os.path.exists(mark):
            open(mark, "w").close()
            os.kill(os.getpid(), signal.SIGUSR1)
    Checkpoint.save = save_then_signal
"""


@pytest.fixture
def experiment(tmp_path, monkeypatch):
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "launch.yaml").write_text(EXPERIMENT.format(out=tmp_path / "out"))
    # Job processes: one thread each (the arithmetic of the in-process reference runs).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    return tmp_path, [f"hydra.searchpath=[file://{tmp_path / 'conf'}]"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def history(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "history.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_smoke_runs_every_curriculum_to_its_end(experiment, capsys):
    root, search = experiment
    assert grid.main(["launch", "--smoke", "--no-report", *search]) == 0
    out = root / "out_smoke"
    assert "runs: 3 total, 3 done" in capsys.readouterr().out
    for key in (CONVENTIONAL, LERAC, K4):
        saved = OmegaConf.load(out / key / "config.yaml")
        assert metrics(out / key)["status"] == "completed"
        assert saved.trainer.max_epochs == 2 and len(history(out / key)) == 2
    for key in (LERAC, K4):  # the block's own regime.k=4 became SMOKE's k = 1
        assert OmegaConf.load(out / key / "config.yaml").regime.k == 1
        first, second = history(out / key)
        # The curriculum ran (layers at different rates) and ended (all at the base lr).
        assert float(first["lr_min"]) < float(first["lr_max"])
        assert second["lr_min"] == second["lr_max"]
    # Without SMOKE the same cells are valid (k below max_epochs); SMOKE only shortens.
    cfg = compose_config([*search, "experiment=launch", "regime=lerac"])
    assert (cfg.regime.k, cfg.trainer.max_epochs) == (3, 6)


def test_submitit_receives_only_the_missing_runs(experiment, capfd):
    root, search = experiment
    out = root / "out_smoke"
    done = out / CONVENTIONAL
    done.mkdir(parents=True)
    (done / "metrics.json").write_text('{"status": "completed", "test_acc": 50.0}')
    args = ["launch", "--smoke", "--no-report", "hydra/launcher=submitit_local", *search]
    assert grid.main(args) == 0
    printed = capfd.readouterr().out
    assert "runs: 2 to run, 1 completed (not sent)" in printed
    assert "submitting 2 runs to hydra_plugins.hydra_submitit_launcher" in printed
    assert len(list((out / ".submitit").rglob("*_submitted.pkl"))) == 2  # two jobs
    assert [p.name for p in done.iterdir()] == ["metrics.json"]  # never started
    for key in (LERAC, K4):
        assert metrics(out / key)["status"] == "completed"
        assert (out / key / "predictions.csv").is_file()
    # Run again: everything is completed, nothing reaches the launcher.
    assert grid.main(args) == 0
    printed = capfd.readouterr().out
    assert "runs: 0 to run, 3 completed (not sent)" in printed and "submitting" not in printed
    assert len(list((out / ".submitit").rglob("*_submitted.pkl"))) == 2


def test_usr1_requeues_the_job_and_the_run_resumes(experiment, monkeypatch, capfd):
    root, search = experiment
    one = [*search, "--block", "main", "hydra.sweeper.params.regime=lerac", "--no-report"]
    hook = root / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SIGNAL_AFTER_FIRST_CHECKPOINT)
    monkeypatch.setenv("PYTHONPATH", f"{hook}:{REPO}")
    monkeypatch.setenv("LERAC_TEST_SIGNALLED", str(root / "signalled"))
    assert grid.main(["launch", "hydra/launcher=submitit_local", *one]) == 0
    printed = capfd.readouterr()
    assert (root / "signalled").is_file()  # the job was stopped once
    run_dir = root / "out" / LERAC
    assert f"{LERAC} resumed after epoch 1" in printed.out
    logs = "".join(p.read_text() for p in (root / "out" / ".submitit").rglob("*_log.*"))
    # Our handler stopped the run after its checkpoint, then gave USR1 to submitit's.
    assert "Caught signal SIGUSR1" in logs and "this job is preempted" in logs
    assert "Requeued job" in logs and logs.count("Loading pickle") == 2
    assert f"{LERAC}: resuming after epoch 1" in logs

    # The uninterrupted run, in this process: the same history, the same predictions.
    reference = root / "reference"
    assert grid.main(["launch", f"paths.output_dir={reference}", *one]) == 0
    assert history(run_dir) == history(reference / LERAC)
    expected = (reference / LERAC / "predictions.csv").read_text()
    assert (run_dir / "predictions.csv").read_text() == expected
    resumed, uninterrupted = metrics(run_dir), metrics(reference / LERAC)
    assert (resumed["resumed_from_epoch"], uninterrupted["resumed_from_epoch"]) == (1, 0)
    assert resumed["test_acc"] == uninterrupted["test_acc"] and resumed["epochs"] == 6


def test_the_cpu_slurm_preset_asks_for_no_gpu():
    cfg = compose_config(["experiment=demo", "hydra/launcher=slurm_cpu"], hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.gpus_per_node is None
    assert (launcher.cpus_per_task, launcher.mem_gb, launcher.signal_delay_s) == (1, 2, 120)
