"""The grid: a miniature experiment through a real Hydra launcher, its report, a rerun
that sends only what is missing, a run that fails without harming the others, the
DRY=1 listing, and the launcher presets."""

import json
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig

from lerac import grid
from lerac.launch import gpu_for_job
from tests.conftest import compose_config

REPO = Path(__file__).resolve().parents[1]

# Digits, ResNet-18 at width 4, 2 epochs of one batch, k = 1; a block with a tag.
MINI = """\
# @package _global_
defaults:
  - override /dataset: digits
  - override /logger: none
model: {{width: 4, table1: {{lerac_k: 1}}}}
trainer: {{max_epochs: 2, batch_size: 64, limit_train_batches: 1, limit_eval_batches: 1,
          device: cpu, progress: false}}
paths: {{output_dir: {out}}}
grid:
  title: Mini
  paper: {paper}
  reference: conventional
  report: {results}/mini
  figures: {results}/figures
  blocks:
    tagged: {{regime: lerac, seed: 2, tag: 'k\\${{model.table1.lerac_k}}'}}
hydra:
  sweeper:
    params:
      regime: conventional,lerac
      seed: 0,1
"""
PAPER = "# Test table\nmodel,dataset,regime,tag,paper_row,mean,std\n" + "".join(
    f"resnet18,digits,{r},,{r},{m},0.50\n"
    for r, m in (("conventional", "90.00"), ("lerac", "91.00"))
)


@pytest.fixture
def mini(tmp_path):
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (tmp_path / "paper.csv").write_text(PAPER)
    (conf / "mini.yaml").write_text(
        MINI.format(
            out=tmp_path / "out", paper=tmp_path / "paper.csv", results=tmp_path / "results"
        )
    )
    return tmp_path, [f"hydra.searchpath=[file://{tmp_path / 'conf'}]"]


@pytest.fixture
def quiet_env(monkeypatch):
    # The multiruns are real subprocesses; one thread each keeps 2 shared cores usable.
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_a_table_runs_reports_and_resumes(mini, quiet_env, capfd):
    root, search = mini
    out = root / "out"
    good = [f"digits_resnet18_{r}_seed{s}" for r in ("conventional", "lerac") for s in (0, 1)]
    broken = good.pop()
    # A run that cannot write its files fails; the others of its multirun go on.
    (out / broken / "history.csv").mkdir(parents=True)
    assert grid.main(["mini", "--block", "main", *search]) == 1  # fails after the report
    printed = capfd.readouterr()
    assert "Launching 4 jobs" in printed.err + printed.out
    for key in good:
        metrics = json.loads((out / key / "metrics.json").read_text())
        assert metrics["status"] == "completed"
        assert (out / key / "predictions.csv").is_file()
    assert json.loads((out / broken / "metrics.json").read_text())["status"] == "failed"

    md = (root / "results" / "mini.md").read_text()
    assert "| resnet18 | digits | lerac | " in md and "| 1/2 (1 failed) |" in md
    assert "91.00 ± 0.50" in md and "McNemar" in md
    assert f"{broken} (failed)" in md.split("## Missing runs")[1]
    assert "digits_resnet18_lerac_k1_seed2 (missing)" in md  # the block not run yet
    assert (root / "results" / "mini.csv").read_text().count("\n") == 4
    figures = {p.name for p in (root / "results" / "figures").iterdir()}
    assert figures == {"mini_val_accuracy.png", "mini_figure1.png", "mini_figure2.png"}

    # Started again: the failed run and an interrupted one (no metrics.json) are trained,
    # the finished ones are not even sent to the launcher and are left as they were.
    (out / broken / "history.csv").rmdir()
    (out / good[2] / "metrics.json").unlink()
    stamps = {k: (out / k / "metrics.json").stat().st_mtime_ns for k in good[:2]}
    assert grid.main(["mini", "--block", "main", *search]) == 0
    printed = capfd.readouterr()
    assert "runs: 2 to run, 2 completed (not sent)\nsubmitting 2 runs" in printed.out
    assert "Launching 2 jobs" in printed.err + printed.out
    assert {k: (out / k / "metrics.json").stat().st_mtime_ns for k in good[:2]} == stamps
    for key in (broken, good[2]):
        assert json.loads((out / key / "metrics.json").read_text())["status"] == "completed"


def test_dry_lists_counts_and_estimates(mini, tmp_path, capsys, monkeypatch):
    root, search = mini
    done = root / "out" / "digits_resnet18_lerac_seed1"
    done.mkdir(parents=True)
    (done / "metrics.json").write_text('{"status": "completed", "test_acc": 1.0}')

    monkeypatch.setattr(grid, "BENCHMARK", tmp_path / "none.json")  # no benchmark measured
    assert grid.main(["mini", "--dry", *search]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "runs: 5 total, 1 done, 4 to run, ~? (no benchmark) GPU-hours"
    assert (
        "no measured throughput" in lines[-2]
        and "completed [main] digits_resnet18_lerac_seed1" in lines
        and "missing   [tagged] digits_resnet18_lerac_k1_seed2" in lines
    )

    # SMOKE=1 runs the same grid into its own folder, where nothing is done yet.
    assert grid.main(["mini", "--dry", "--smoke", *search]) == 0
    assert "runs: 5 total, 0 done, 5 to run" in capsys.readouterr().out
    experiment = grid.load_experiment("mini", [*search, *grid.SMOKE])
    assert (
        experiment.cfg.trainer.max_epochs == 2 and experiment.cfg.trainer.limit_train_batches == 2
    )

    bench = tmp_path / "benchmark.json"
    bench.write_text(json.dumps({"throughput": {"cuda": {"resnet18_samples_per_s": 1437.0}}}))
    monkeypatch.setattr(grid, "BENCHMARK", bench)
    assert grid.main(["mini", "--dry", "--block", "main", *search]) == 0
    # 3 missing runs x 2 epochs x 1,437 digits training examples / 1,437 samples/s = 6 s.
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"runs: 4 total, 1 done, 3 to run, ~{6 / 3600:.1f} GPU-hours"


def test_unknown_experiment_or_block_is_one_clear_error(mini, capsys):
    root, search = mini
    assert grid.main(["table99", "--dry"]) == 2
    assert grid.main(["mini", "--dry", "--block", "nope", *search]) == 2
    err = capsys.readouterr().err
    assert "experiment=table99" in err and "table2" in err and "tagged" in err


def test_launcher_presets_compose(monkeypatch):
    local = compose_config(["experiment=table2", "hydra/launcher=gpus"], hydra_config=True)
    assert local.hydra.launcher._target_.endswith("JoblibLauncher")
    assert local.hydra.launcher.n_jobs == 4 and local.hydra.launcher.prefer == "processes"
    slurm = compose_config(
        ["experiment=table2", "hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
        hydra_config=True,
    )
    launcher = slurm.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert (launcher.gpus_per_node, launcher.max_num_timeout, launcher.timeout_min) == (1, 3, 1440)

    # Job i sees GPU i mod n of the GPUs the launching process sees.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert [gpu_for_job(i) for i in range(4)] == ["4", "6", "4", "6"]
    local.hydra.job.num = 3
    HydraConfig.instance().set_config(local)
    assert local.hydra.job.env_set.CUDA_VISIBLE_DEVICES == "6"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_for_job(1) == ""
