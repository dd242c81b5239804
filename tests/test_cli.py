"""The command line as a researcher uses it: clear one-line errors, a sweep, a report."""

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[1]


def run(*args, cwd):
    # PYTHONPATH: subprocesses import this checkout's lerac, not the installed one.
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["regime.lr_first=1e-8", "regime.lr_last=1e-1"], ["regime.lr_last", "swap"]),
        (["regime.k=0"], ["regime.k", "positive"]),
        (["regime.lr_first=1.0"], ["above the base lr", "regime.lr_first"]),
        (["regime.update=cosine"], ["regime.update='cosine'", "exponential, linear, step"]),
        (
            ["dataset=cifar10", "paths.data_dir=nowhere"],
            ["cifar10 not found", "nowhere", "lerac-fetch cifar10"],
        ),
        (["model=resnet50"], ["model=resnet50 is not an option", "resnet18"]),
        (["trainer.max_epoch=3"], ["did you mean trainer.max_epochs?"]),
        (["trainer.device=tpu"], ["trainer.device", "auto, cpu or cuda"]),
    ],
)
def test_bad_input_ends_with_a_clear_message(tmp_path, overrides, words):
    result = run(
        "-m", "lerac.suite.train", *TINY, f"paths.output_dir={tmp_path}", *overrides, cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert len([x for x in result.stderr.splitlines() if x.startswith("error: ")]) == 1
    for word in words:
        assert word in result.stderr, result.stderr


def test_sweep_over_regimes_and_seeds_then_report(tmp_path):
    out = tmp_path / "sweep"
    result = run(
        "-m",
        "lerac.suite.train",
        "-m",
        *TINY,
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=2",
        "regime=conventional,lerac",
        "seed=0,1",
        f"paths.output_dir={out}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    runs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert runs == [
        "digits_resnet18_conventional_seed0",
        "digits_resnet18_conventional_seed1",
        "digits_resnet18_lerac_seed0",
        "digits_resnet18_lerac_seed1",
    ]
    for name in runs:
        assert {"metrics.json", "history.csv", "lr_schedule.csv", "layers.csv"} <= {
            p.name for p in (out / name).iterdir()
        }

    report = run(
        "-m", "lerac.suite.report", str(out), "--csv", str(tmp_path / "summary.csv"), cwd=tmp_path
    )
    assert report.returncode == 0, report.stderr
    lines = report.stdout.strip().splitlines()
    assert len(lines) == 4  # header, rule, one row per regime
    assert (
        "conventional" in lines[2] and "lerac" in lines[3] and " 2 " in lines[3] and "±" in lines[3]
    )
    assert (tmp_path / "summary.csv").read_text().count("\n") == 3

    plot = run("-m", "lerac.suite.plots", str(out), cwd=tmp_path)
    assert plot.returncode == 0, plot.stderr
    image = matplotlib.image.imread(out / "val_accuracy.png")  # a real PNG, drawn
    assert image.ndim == 3 and min(image.shape[:2]) > 100 and image.std() > 0

    # Started again, the sweep skips what is done.
    again = run(
        "-m",
        "lerac.suite.train",
        "-m",
        *TINY,
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=2",
        "regime=conventional",
        "seed=0",
        f"paths.output_dir={out}",
        cwd=tmp_path,
    )
    assert again.returncode == 0 and "skipped" in again.stdout + again.stderr


def test_report_on_an_empty_folder_says_what_to_do(tmp_path):
    result = run("-m", "lerac.suite.report", str(tmp_path), cwd=tmp_path)
    assert (
        result.returncode == 2
        and "no metrics.json" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_regime_benchmark_reports_medians_and_ratios(tmp_path):
    out = tmp_path / "bench.json"
    args = ["--width", "4", "--steps", "3", "--warmup", "1", "--device", "cpu", "--out", str(out)]
    result = run(str(REPO / "scripts" / "bench_regimes.py"), *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    numbers = json.loads(out.read_text())
    assert numbers["param_groups"] == {"conventional": 1, "lerac": 41, "cbs": 1}
    for regime in ("lerac", "cbs"):  # each ratio is the quotient of the two medians
        assert numbers[f"step_time_ratio_{regime}_over_conventional"] == pytest.approx(
            numbers[f"{regime}_step_ms_median"] / numbers["conventional_step_ms_median"]
        )
    assert numbers["update_time_ratio_lerac_over_conventional"] == pytest.approx(
        numbers["lerac_update_ms_median"] / numbers["conventional_update_ms_median"]
    )
    # The optimizer update is part of the step it is timed in.
    assert 0 < numbers["lerac_update_ms_median"] < numbers["lerac_step_ms_median"]
