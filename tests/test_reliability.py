"""Nothing lost, nothing changed: kill-and-resume equality, SIGTERM checkpoint-and-exit,
one clear line for every bad input, NaN losses, atomic writes, the run-directory lock."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lerac.engine.checkpoint import CHECKPOINT, Checkpoint
from lerac.engine.store import METRICS, RunLock, RunStore, find_runs, read_metrics
from lerac.errors import ConfigError, RunLocked
from lerac.suite.train import main, train
from lerac.suite.validate import validate
from tests.conftest import TINY, cifar_batch, compose_config, write_pickle

REPO = Path(__file__).resolve().parents[1]
KEY = "digits_resnet18_lerac_seed0"
# 3 epochs of 3 steps of 32, curriculum of 1 epoch, deterministic: a kill right after
# the first checkpoint lands mid-training.
RESUMABLE = TINY + [
    "trainer.max_epochs=3",
    "trainer.batch_size=32",
    "trainer.limit_train_batches=3",
    "trainer.limit_eval_batches=2",
    "trainer.deterministic=true",
]
TIMING = ("train_seconds", "resumed_from_epoch")


def env() -> dict[str, str]:
    # PYTHONPATH: the subprocess imports this checkout's lerac, not the installed one.
    # One thread, like this module's in-process runs (see one_thread): the same arithmetic.
    return {
        **os.environ,
        "WANDB_MODE": "disabled",
        "HYDRA_FULL_ERROR": "0",
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
    }


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models train ~20x faster on one thread when the CPU cores are shared (OpenMP
    threads spin waiting for each other); restored for the other test modules."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The child is `python -m lerac.suite.train` whose first checkpoint, once on disk, sends the
# process a signal: the stop comes from inside the run, at a known point, with no polling.
SIGNAL_AFTER_FIRST_CHECKPOINT = """
import os, runpy, signal, sys
from lerac.engine.checkpoint import Checkpoint
stop, save = getattr(signal, sys.argv.pop(1)), Checkpoint.save
def save_then_signal(self, state):
    save(self, state)
    if not getattr(Checkpoint, "signalled", False):
        Checkpoint.signalled = True
        os.kill(os.getpid(), stop)
Checkpoint.save = save_then_signal
runpy.run_module("lerac.suite.train", run_name="__main__")
"""


def train_until_signalled(out: Path, stop: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-c", SIGNAL_AFTER_FIRST_CHECKPOINT, stop, *RESUMABLE]
    args.append(f"paths.output_dir={out}")
    return subprocess.run(
        args, cwd=out.parent, env=env(), capture_output=True, text=True, timeout=300
    )


def rows(path: Path, drop: str = "seconds") -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k != drop} for row in csv.DictReader(f)]


def without(metrics: dict, keys=TIMING) -> dict:
    return {k: v for k, v in metrics.items() if k not in keys}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference") / KEY
    return run_dir, train(compose_config(RESUMABLE), run_dir)


def assert_same_run(run_dir: Path, metrics: dict, reference) -> None:
    ref_dir, ref = reference
    assert metrics["status"] == "completed" and metrics["resumed_from_epoch"] >= 1
    assert without(metrics) == without(ref)
    assert rows(run_dir / "history.csv") == rows(ref_dir / "history.csv")
    assert rows(run_dir / "lr_schedule.csv") == rows(ref_dir / "lr_schedule.csv")
    assert (run_dir / "predictions.csv").read_text() == (ref_dir / "predictions.csv").read_text()
    assert not (run_dir / CHECKPOINT).exists()  # pruned: trainer.keep_checkpoint=false


def test_a_run_killed_mid_training_resumes_to_the_same_result(tmp_path, uninterrupted):
    out = tmp_path / "out"
    out.mkdir()
    run_dir = out / KEY
    proc = train_until_signalled(out, "SIGKILL")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert read_metrics(run_dir)["status"] == "running"  # killed: nothing wrote an end
    assert Checkpoint(run_dir).load()["progress"]["epoch"] == 1  # of 3

    # The same command again: the stale lock of the dead process does not block it.
    assert_same_run(run_dir, train(compose_config(RESUMABLE), run_dir), uninterrupted)


def test_sigterm_checkpoints_and_exits_then_the_run_resumes(tmp_path, uninterrupted):
    out = tmp_path / "out"
    out.mkdir()
    run_dir = out / KEY
    proc = train_until_signalled(out, "SIGTERM")
    stderr = proc.stderr
    assert proc.returncode == 3, stderr
    assert "Traceback" not in stderr and "interrupted: SIGTERM received" in stderr, stderr
    saved = read_metrics(run_dir)
    assert saved["status"] == "interrupted" and "SIGTERM" in saved["error"]
    epoch = Checkpoint(run_dir).load()["progress"]["epoch"]
    assert [int(r["epoch"]) for r in rows(run_dir / "history.csv")] == list(range(1, epoch + 1))

    assert_same_run(run_dir, train(compose_config(RESUMABLE), run_dir), uninterrupted)


@pytest.fixture(scope="module")
def corrupt_cifar(tmp_path_factory) -> Path:
    """CIFAR-10 in the real layout whose third batch was cut short by a failed copy."""
    import numpy as np

    root = tmp_path_factory.mktemp("corrupt")
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        write_pickle(folder / name, cifar_batch(rng, 10, 10, "labels"))
    data = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(data[: len(data) // 2])
    return root


BAD_INPUTS = [
    (["regime.lr_last=1.0"], ["regime.lr_last=1", "regime.lr_first=0.1", "swap"]),
    (["regime.k=0"], ["regime.k=0", "positive"]),
    (["regime.k=5"], ["regime.k=5", "trainer.max_epochs=2", "raise trainer.max_epochs"]),
    (["optimizer.lr=-0.1"], ["optimizer.lr=-0.1", "positive"]),
    (["optimizer.lr=abc"], ["optimizer.lr='abc'", "positive learning rate", "optimizer.lr=0.1"]),
    (["seed=-1"], ["seed=-1", "2**32 - 1"]),
    (["seed=4294967296"], ["seed=4294967296", "2**32 - 1"]),
    (["trainer.batch_size=0"], ["trainer.batch_size=0", "positive"]),
    (["trainer.max_epochs=0"], ["trainer.max_epochs=0", "positive"]),
    (["dataset.val_fraction=1.5"], ["dataset.val_fraction=1.5", "(0, 1)"]),
    (["dataset.test_fraction=0"], ["dataset.test_fraction=0", "(0, 1)"]),
    (["dataset.modality=text"], ["model=resnet18 takes image or audio", "dataset=digits"]),
    (["regime.update=cosine"], ["regime.update='cosine'", "exponential, linear, step"]),
    (["trainer.device=tpu"], ["trainer.device='tpu'", "auto, cpu or cuda"]),
    (
        ["dataset=cifar10", "paths.data_dir=nowhere"],
        ["cifar10 not found", "'nowhere'", "paths.data_dir", "lerac-fetch cifar10"],
    ),
    (
        ["+model.pretrained=someone/missing-model"],
        ["model.pretrained='someone/missing-model'", "HF_HUB_OFFLINE", "hf download someone"],
    ),
    (["model.width=0"], ["model.width=0", "positive integer"]),
    (["tag=../../escaped"], ["tag='../../escaped'", "may not hold /"]),
    (["dataset=nonexist"], ["dataset=nonexist is not an option", "digits"]),
    (["trainer.max_epoch=3"], ["did you mean trainer.max_epochs?"]),
]


@pytest.mark.parametrize("overrides, words", BAD_INPUTS)
def test_each_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, overrides, words):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setattr(sys, "argv", ["lerac.suite.train", *TINY, f"paths.output_dir={tmp_path}"])
    sys.argv += overrides
    with pytest.raises(SystemExit) as exit_:
        main()
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    for word in words:
        assert word in errors[0], errors[0]
    # Refused before anything was built: no run files, no data read.
    assert not list(tmp_path.rglob(METRICS))


def test_a_damaged_data_file_is_named(tmp_path, monkeypatch, capsys, corrupt_cifar):
    argv = [*TINY, "dataset=cifar10", f"paths.data_dir={corrupt_cifar}"]
    monkeypatch.setattr(sys, "argv", ["lerac.suite.train", *argv, f"paths.output_dir={tmp_path}"])
    with pytest.raises(SystemExit) as exit_:
        main()
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in stderr, stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert "data_batch_3 cannot be read" in line and "fetch the data set again" in line
    saved = read_metrics(tmp_path / "cifar10_resnet18_lerac_seed0")
    assert saved["status"] == "failed" and "data_batch_3" in saved["error"]


def test_a_valid_config_passes_the_schema():
    validate(compose_config(TINY))
    validate(compose_config(TINY + ["regime=lerac_step", "schedule=warmup_cosine"]))
    validate(compose_config(TINY + ["regime=conventional", "trainer.max_epochs=1"]))


def test_a_diverging_run_fails_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    # A real multirun: lr 1e30 makes the loss infinite; lr 0.1 trains.
    out = tmp_path / "sweep"
    args = [*TINY, "regime=conventional", "trainer.max_epochs=1", "trainer.batch_size=32"]
    args += ["trainer.limit_train_batches=2", "trainer.limit_eval_batches=1"]
    args += ["optimizer.lr=1e30,0.1", "tag=lr${optimizer.lr}", f"paths.output_dir={out}"]
    monkeypatch.setattr(sys, "argv", ["lerac.suite.train", "-m", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in stderr, stderr
    (line,) = [x for x in stderr.splitlines() if x.startswith("error: ")]
    assert "training loss became" in line and "lower optimizer.lr" in line
    failed = read_metrics(out / "digits_resnet18_conventional_lr1e+30_seed0")
    assert failed["status"] == "failed" and "TrainingDiverged" in failed["error"]
    assert "nan" in failed["error"] or "inf" in failed["error"]
    assert read_metrics(out / "digits_resnet18_conventional_lr0.1_seed0")["status"] == "completed"


def test_a_crash_between_write_and_rename_keeps_the_previous_file(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    store.write_metrics({"status": "running", "epoch": 1})
    checkpoint = Checkpoint(tmp_path)
    checkpoint.save({"progress": {"epoch": 1}, "weights": torch.ones(3)})

    def crash(src, dst):
        raise OSError("power cut between write and rename")

    monkeypatch.setattr(os, "replace", crash)  # store and checkpoint both rename with it
    with pytest.raises(OSError):
        store.write_metrics({"status": "completed", "epoch": 2})
    with pytest.raises(OSError):
        checkpoint.save({"progress": {"epoch": 2}, "weights": torch.zeros(3)})
    monkeypatch.undo()
    assert read_metrics(tmp_path) == {"status": "running", "epoch": 1}
    state = checkpoint.load()
    assert state["progress"] == {"epoch": 1} and state["weights"].tolist() == [1, 1, 1]


def test_corrupt_and_partial_run_dirs_are_listed(tmp_path):
    for name, text in [("good", '{"status": "completed", "seed": 0}'), ("cut", '{"status": "comp')]:
        (tmp_path / name).mkdir()
        (tmp_path / name / METRICS).write_text(text)
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / METRICS).write_text("[1, 2]")
    (tmp_path / "cut" / "config.yaml").write_text(
        "seed: 3\ntag: ''\ndataset: {id: digits}\nmodel: {id: resnet18}\nregime: {id: lerac}\n"
    )
    runs = {Path(r["run_dir"]).name: r for r in find_runs(tmp_path)}
    assert runs["good"]["status"] == "completed"
    assert runs["cut"]["status"] == "corrupt" and "cannot be read" in runs["cut"]["error"]
    # Listed in its group, from config.yaml, so a report can name it.
    assert (runs["cut"]["dataset"], runs["cut"]["regime"], runs["cut"]["seed"]) == (
        "digits",
        "lerac",
        3,
    )
    assert runs["list"]["status"] == "corrupt" and "dataset" not in runs["list"]


def test_a_second_process_on_the_same_run_dir_is_refused(tmp_path):
    run_dir = tmp_path / KEY
    with RunLock(run_dir):  # another training process holds the directory
        with pytest.raises(RunLocked, match=rf"in use by pid {os.getpid()} on .*tag="):
            train(compose_config(TINY), run_dir)
        assert not (run_dir / METRICS).exists()  # the second one wrote nothing
    with RunLock(run_dir):  # released on exit; a dead holder releases it too (kill test)
        pass


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path):
    run_dir = tmp_path / KEY
    Checkpoint(run_dir).path.parent.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(json.dumps({"seed": 0, "optimizer": {"lr": 0.5}}))
    Checkpoint(run_dir).save({"progress": {"epoch": 1}})
    with pytest.raises(ConfigError, match=r"other settings .*overwrite=true"):
        train(compose_config(TINY), run_dir)


def test_errors_raised_inside_instantiate_reach_the_user_unwrapped():
    from omegaconf import OmegaConf

    from lerac.errors import ConfigError
    from lerac.suite.build import build

    node = OmegaConf.create(
        {"id": "x", "_target_": "lerac.engine.regimes.LearningRateCurriculum", "k": 0}
        | {"lr_first": 0.1, "lr_last": 1e-8}
    )
    with pytest.raises(ConfigError, match=r"^regime.k must be a positive number") as err:
        build(node)
    assert err.type is ConfigError  # not Hydra's InstantiationException around it


def test_a_run_that_stopped_early_does_not_train_on_when_resumed(tmp_path):
    # A linear model at lr 1e-6 never improves: early stopping ends it after epoch 4. A
    # crash before metrics.json was written must not make the resume train epochs 5-12.
    from lerac.engine.loop import Trainer
    from lerac.engine.regimes import Conventional
    from lerac.engine.settings import TrainerSettings
    from lerac.suite.data.digits import load_digits

    settings = TrainerSettings(
        max_epochs=12, batch_size=256, device="cpu", progress=False, early_stopping_patience=3
    )
    checkpoint = Checkpoint(tmp_path)

    def run():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        store = RunStore(tmp_path)
        optimizer = lambda groups: torch.optim.SGD(groups, lr=1e-6)  # noqa: E731
        trainer = Trainer(settings, regime=Conventional(), store=store, checkpoint=checkpoint)
        result = trainer.fit(model, load_digits(), optimizer)
        store.close()
        return result

    first = run()
    assert first.epochs == 4 and checkpoint.exists()
    again = run()
    assert (again.epochs, again.resumed_from_epoch, again.test_acc) == (4, 4, first.test_acc)
    assert [r["epoch"] for r in rows(tmp_path / "history.csv")] == ["1", "2", "3", "4"]
