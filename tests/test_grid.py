"""The grid: a miniature experiment through a real Hydra launcher, its report, a rerun
that sends only what is missing, a run that fails without harming the others, the
DRY=1 listing, and the launcher presets."""

import json
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig

from lerac.suite import grid
from lerac.suite.flops import training_flops
from lerac.suite.gpus import gpu_for_job
from lerac.suite.protocol import ProtocolWarning
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
    for k in good[:2]:  # a marker that a retrained run's fresh metrics.json would not carry
        metrics = json.loads((out / k / "metrics.json").read_text())
        (out / k / "metrics.json").write_text(json.dumps({**metrics, "marker": k}))
    assert grid.main(["mini", "--block", "main", *search]) == 0
    printed = capfd.readouterr()
    assert "runs: 2 to run, 2 completed (not sent)\nsubmitting 2 runs" in printed.out
    assert "Launching 2 jobs" in printed.err + printed.out
    for k in good[:2]:
        assert json.loads((out / k / "metrics.json").read_text())["marker"] == k
    for key in (broken, good[2]):
        assert json.loads((out / key / "metrics.json").read_text())["status"] == "completed"


def test_dry_lists_counts_and_estimates(mini, tmp_path, capsys, monkeypatch):
    root, search = mini
    done = root / "out" / "digits_resnet18_lerac_seed1"
    done.mkdir(parents=True)
    (done / "metrics.json").write_text('{"status": "completed", "test_acc": 1.0}')
    per_example = training_flops(
        compose_config(["dataset=digits", "model=resnet18", "model.width=4"])
    )

    monkeypatch.setattr(grid, "BENCHMARK", tmp_path / "none.json")  # no benchmark measured
    assert grid.main(["mini", "--dry", "--gpu", "a100", *search]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    # 4 missing runs x 2 epochs x 1,438 digits training examples, at 30% of 312 TFLOP/s.
    hours = 4 * 2 * 1438 * per_example / (312e12 * 0.3) / 3600
    assert lines[-1] == (
        f"runs: 5 total, 1 done, 4 to run, ~{hours:.1f} GPU-hours "
        "(a100, 312 TFLOP/s bf16 x 30% assumed)"
    )
    assert (
        f"flops: resnet18 on digits: {per_example / 1e9:.2f} GFLOP per training example "
        "(x3 forward)"
        in lines
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

    # `make bench` on the GPU replaces the assumption: ResNet-18 (width 4, 32 px) at 1,437
    # samples/s is the sustained FLOP/s every model gets.
    bench = tmp_path / "benchmark.json"
    device = "cuda:0 (NVIDIA H100 80GB HBM3)"
    figures = {device: {"bf16": {"samples_per_s": 1437.0}}}
    bench.write_text(json.dumps({"setup": {"width": 4}, "throughput": figures}))
    monkeypatch.setattr(grid, "BENCHMARK", bench)
    assert grid.main(["mini", "--dry", "--block", "main", "--gpu", "h100", *search]) == 0
    rate = 1437 * training_flops(
        compose_config(["dataset=cifar10", "model=resnet18", "model.width=4"])
    )
    hours = 3 * 2 * 1438 * per_example / rate / 3600  # 1,438 digits training examples
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"runs: 4 total, 1 done, 3 to run, ~{hours:.1f} GPU-hours (h100, ")
    assert f"measured {rate / 1e12:.1f} TFLOP/s: ResNet-18 at 1437 samples/s on {device}" in last
    assert grid.main(["mini", "--dry", "--gpu", "tpu", *search]) == 2


def test_flops_grow_with_the_model_and_the_input():
    def per_example(model, dataset):
        return training_flops(compose_config([f"model={model}", f"dataset={dataset}"]))

    resnet18 = per_example("resnet18", "cifar10")
    # ResNet-18's CIFAR variant: 0.56 G multiply-adds a forward pass, 2 FLOPs each, x3.
    assert resnet18 == pytest.approx(3 * 2 * 0.556e9, rel=0.02)
    assert per_example("wide_resnet50", "cifar10") > 5 * resnet18
    assert per_example("resnet18", "imagenet200") > 3 * resnet18  # 224 px against 32 px
    assert per_example("cvt13_pretrained", "cifar10") > 40 * per_example("cvt13", "cifar10")
    # BERT-large at 512 tokens: ~335M weights in matmuls, 2 FLOPs each a token, x3.
    assert per_example("bert_large", "rte") == pytest.approx(3 * 2 * 0.31e9 * 512, rel=0.15)


def test_table2_plan_sums_each_cells_flops(tmp_path):
    out = [f"paths.output_dir={tmp_path}", f"paths.data_dir={tmp_path / 'data'}"]
    experiment = grid.load_experiment("table2", out)
    experiment.blocks = {"pretrained": experiment.blocks["pretrained"]}  # 45 runs, 3 cells
    runs = grid.enumerate_runs(experiment, out)
    flops = grid.cell_costs(experiment, runs, out)
    datasets = ("cifar10", "cifar100", "tiny_imagenet")
    assert sorted(flops) == [(d, "cvt13_pretrained") for d in datasets]
    rate, how = grid.gpu_rate("h200", 0.3, tmp_path / "none.json")
    assert rate == 989e12 * 0.3 and how == "989 TFLOP/s bf16 x 30% assumed"
    hours, unknown = grid.estimate_hours(runs, flops, rate)
    # The official training splits (dataset.facts): 25 epochs of each, every run.
    examples = {"cifar10": 50_000, "cifar100": 50_000, "tiny_imagenet": 100_000}
    assert all(flops[cell].train_examples == examples[cell[0]] for cell in flops)
    expected = sum(25 * examples[r.dataset] * flops[(r.dataset, r.model)].flops for r in runs)
    assert unknown == 0 and len(runs) == 45 and hours == pytest.approx(expected / rate / 3600)
    lines = grid.data_lines(runs, tmp_path / "data")
    assert lines == [
        "data [pretrained]: cifar10, cvt-13, cifar100, tiny_imagenet not complete: "
        "lerac-fetch cifar10 cvt-13 cifar100 tiny_imagenet"
    ]


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


# One LeRaC cell of digits under two protocols that set the epochs (ResNet-18 CIFAR-10's
# recipe: 200), each its own tag.
PROTOCOL_MINI = """\
# @package _global_
defaults:
  - override /dataset: digits
  - override /logger: none
model: {{width: 4}}
trainer: {{device: cpu, progress: false, batch_size: 64}}
protocol: {{recipe: resnet18/cifar10}}
tag: ${{protocol.id}}
paths: {{output_dir: {out}}}
grid: {{title: Protocols, paper: null, reference: conventional}}
hydra:
  sweeper:
    params:
      regime: lerac
      protocol: released,after_curriculum
"""


def test_smoke_trains_its_two_epochs_under_the_released_protocols(tmp_path, quiet_env):
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "pmini.yaml").write_text(PROTOCOL_MINI.format(out=tmp_path / "out"))
    search = [f"hydra.searchpath=[file://{tmp_path / 'conf'}]"]
    with pytest.warns(ProtocolWarning) as notes:
        assert grid.main(["pmini", "--smoke", "--no-report", *search]) == 0
    stays = "trainer.max_epochs=2 is set explicitly and stays"
    assert sum(stays in str(note.message) for note in notes) == 2  # one per run
    for protocol in ("released", "after_curriculum"):
        run = tmp_path / "out_smoke" / f"digits_resnet18_lerac_{protocol}_seed0"
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["epochs"] == 2, protocol
        assert (run / "config.yaml").read_text().count("id: multistep") == 1
