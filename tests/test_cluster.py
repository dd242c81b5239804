"""The grid on a real SLURM (`make test-cluster`: scripts/slurm_up.sh starts a one-node
SLURM on this machine first). A small digits grid goes through `python -m lerac.suite.grid ...
hydra/launcher=slurm_cpu` as a job array; one job is sent USR1 (SLURM's pre-timeout
signal) in the middle of its run, is requeued and resumes to the result of an
uninterrupted run; a rerun submits nothing. The figures go to stdout and outputs/test_cluster.json.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[1]
# 2 regimes x 2 seeds, digits at ResNet-18 width 4, 6 epochs of 10 batches: long enough
# to stop one run in the middle.
EXPERIMENT = """\
# @package _global_
defaults:
  - override /dataset: digits
  - override /logger: none
model: {{width: 4, table1: {{lerac_k: 2}}}}
trainer: {{max_epochs: 6, batch_size: 64, limit_train_batches: 10, limit_eval_batches: 2,
          device: cpu, progress: false, deterministic: true}}
paths: {{output_dir: {out}}}
grid: {{title: Cluster, paper: null, reference: conventional}}
hydra:
  sweeper:
    params:
      regime: conventional,lerac
      seed: 0,1
"""
TARGET = "digits_resnet18_lerac_seed0"
FIGURES = REPO / "outputs" / "test_cluster.json"


@pytest.fixture(scope="module")
def slurm() -> None:
    missing = [tool for tool in ("sbatch", "scontrol", "scancel") if not shutil.which(tool)]
    assert not missing, f"no SLURM here ({missing} not found): run `make test-cluster`"
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    assert "UP" in ping.stdout, f"no SLURM controller answers: {ping.stdout}{ping.stderr}"


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def grid(conf: Path, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "lerac.suite.grid", "cluster", "--no-report", *args]
    command += ["hydra/launcher=slurm_cpu", f"hydra.searchpath=[file://{conf}]"]
    return subprocess.Popen(
        command, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_for(path: Path, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the grid ended before {path} appeared:\n{proc.stdout.read()}"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.05)


def slurm_job_of(run_dir: Path) -> str:
    """The SLURM job training ``run_dir``: the lock holds the process id, whose
    environment names the job (one node: the process is on this machine)."""
    pid = re.match(r"pid (\d+)", (run_dir / ".lock").read_text())[1]
    env = dict(
        item.split("=", 1)
        for item in Path(f"/proc/{pid}/environ").read_text().split("\0")
        if "=" in item
    )
    return env["SLURM_JOB_ID"]


def jobs(array: str) -> list[dict[str, str]]:
    """Every task of a job array as scontrol shows it (MinJobAge keeps finished ones)."""
    shown = subprocess.run(
        ["scontrol", "show", "job", "-o", array], capture_output=True, text=True, check=True
    ).stdout
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in shown.splitlines() if line]


def arrays(out: Path) -> set[str]:
    """The job arrays submitted for ``out``: submitit's folders are named <array>_<task>."""
    found = (re.fullmatch(r"(\d+)_\d+", p.name) for p in (out / ".submitit").iterdir())
    return {m[1] for m in found if m}


def seconds(job: dict[str, str], start: str, end: str) -> float:
    return (datetime.fromisoformat(job[end]) - datetime.fromisoformat(job[start])).total_seconds()


def test_a_grid_on_slurm_requeues_resumes_and_submits_only_what_is_missing(slurm, tmp_path):
    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    out = tmp_path / "out"
    (conf / "experiment" / "cluster.yaml").write_text(EXPERIMENT.format(out=out))

    started = time.monotonic()
    proc = grid(conf)
    target = out / TARGET
    wait_for(target / "checkpoint.pt", 300, proc)  # its first epoch is on disk
    job = slurm_job_of(target)
    subprocess.run(["scancel", "--signal=USR1", job], check=True)
    printed = proc.communicate(timeout=540)[0]
    wall = time.monotonic() - started
    assert proc.returncode == 0, printed
    assert "runs: 4 to run, 0 completed (not sent)" in printed, printed
    assert "runs: 4 total, 4 done" in printed, printed
    resumed = json.loads((target / "metrics.json").read_text())
    epoch = resumed["resumed_from_epoch"]
    assert 1 <= epoch < 6 and f"{TARGET} resumed after epoch {epoch}" in printed, printed

    # The uninterrupted run of the same cell, outside SLURM: the same predictions.
    reference = tmp_path / "reference"
    subprocess.run(
        [sys.executable, "-m", "lerac.suite.train", "experiment=cluster", "regime=lerac", "seed=0"]
        + [f"paths.output_dir={reference}", f"hydra.searchpath=[file://{conf}]"],
        env=environment(),
        check=True,
        capture_output=True,
    )
    expected = (reference / TARGET / "predictions.csv").read_text()
    assert (target / "predictions.csv").read_text() == expected
    assert (
        resumed["test_acc"]
        == json.loads((reference / TARGET / "metrics.json").read_text())["test_acc"]
    )

    # The array: one task per run; the stopped one was requeued (Restarts=1).
    assert len(arrays(out)) == 1, arrays(out)
    (array,) = arrays(out)
    tasks = jobs(array)
    assert len(tasks) == 4 and all(t["JobState"] == "COMPLETED" for t in tasks), tasks
    requeued = [t for t in tasks if t["JobId"] == job]
    assert requeued and requeued[0]["Restarts"] == "1", requeued

    # Run again: every run is completed, nothing is submitted.
    again = grid(conf)
    printed_again = again.communicate(timeout=120)[0]
    assert again.returncode == 0, printed_again
    assert "runs: 0 to run, 4 completed (not sent)" in printed_again, printed_again
    assert "submitting" not in printed_again
    assert arrays(out) == {array}

    others = [t for t in tasks if t["JobId"] != job]
    train = [
        json.loads((out / key / "metrics.json").read_text())["train_seconds"]
        for key in (p.name for p in out.iterdir() if p.name.startswith("digits_"))
        if key != TARGET
    ]
    figures = {
        # The first start is SLURM's latency; later tasks also wait for a free CPU.
        "submission_to_first_start_s": min(
            waits := [seconds(t, "SubmitTime", "StartTime") for t in others]
        ),
        "submission_to_last_start_s": max(waits),
        "job_seconds_mean": sum(seconds(t, "StartTime", "EndTime") for t in others) / 3,
        "train_seconds_mean": sum(train) / 3,
        "grid_wall_s": round(wall, 1),
        "requeue_resume_epoch": epoch,
        "runs": 4,
        "cpus": os.cpu_count(),
    }
    figures["per_job_overhead_s"] = round(
        figures["job_seconds_mean"] - figures["train_seconds_mean"], 1
    )
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    FIGURES.write_text(json.dumps(figures, indent=1) + "\n")
    print("\ncluster figures:", json.dumps(figures))
