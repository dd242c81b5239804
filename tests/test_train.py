"""Real short runs: the files a run leaves, repeatability, the conventional schedule."""

import csv
import json
import warnings

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from lerac.curriculum import initial_rates
from lerac.engine.loop import Trainer, TrainingDiverged
from lerac.engine.regimes import Conventional, LearningRateCurriculum
from lerac.engine.schedules import ReduceOnPlateau
from lerac.engine.settings import TrainerSettings
from lerac.engine.store import RunStore
from lerac.errors import ConfigError
from lerac.suite import plots
from lerac.suite.data.digits import load_digits
from lerac.suite.train import train
from tests.conftest import TINY, compose_config


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def lerac_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "digits_resnet18_lerac_seed0"
    metrics = train(compose_config(TINY + ["trainer.max_epochs=3"]), run_dir)
    return run_dir, metrics


def test_a_digits_run_writes_all_four_files(lerac_run):
    run_dir, metrics = lerac_run
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved == metrics
    assert saved["status"] == "completed"
    for key in ("dataset", "model", "regime", "seed"):
        assert key in saved
    assert (saved["dataset"], saved["model"], saved["regime"], saved["seed"]) == (
        "digits",
        "resnet18",
        "lerac",
        0,
    )
    assert 0 <= saved["test_acc"] <= 100 and 0 <= saved["val_acc"] <= 100
    assert saved["epochs"] == 3 and saved["train_seconds"] > 0

    history = read_csv(run_dir / "history.csv")
    assert [int(r["epoch"]) for r in history] == [1, 2, 3]
    assert set(history[0]) >= {
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "lr_min",
        "lr_max",
        "seconds",
    }
    # The reported epoch is the one with the best validation accuracy.
    val = [float(r["val_acc"]) for r in history]
    assert saved["best_epoch"] == 1 + val.index(max(val))
    assert saved["val_acc"] == pytest.approx(max(val))

    layers = read_csv(run_dir / "layers.csv")
    assert [r["name"] for r in layers][:2] == ["conv1", "bn1"] and layers[-1]["name"] == "fc"
    assert len(layers) == saved["layers"] == 41


def test_the_lr_schedule_file_follows_eq8(lerac_run):
    run_dir, metrics = lerac_run
    rows = read_csv(run_dir / "lr_schedule.csv")
    n_layers = metrics["layers"]
    steps_per_epoch = 1294 // 128 + 1  # 11 batches of digits' 1,294 training images
    k = 1 * steps_per_epoch  # model.table1.lerac_k=1 epoch
    by_step = {}
    for r in rows:
        by_step.setdefault(int(r["step"]), {})[int(r["layer"])] = float(r["lr"])
    # Every step 0..k (step k opens epoch 2), then one row per layer at epoch 3's start.
    assert sorted(by_step) == list(range(k + 1)) + [k + steps_per_epoch]
    assert all(len(v) == n_layers for v in by_step.values())
    start = [by_step[0][j] for j in range(n_layers)]
    assert start == pytest.approx(initial_rates(n_layers, 0.1, 1e-8), rel=1e-5)
    middle = [by_step[k // 2][j] for j in range(n_layers)]
    expected = [s * (0.1 / s) ** ((k // 2) / k) for s in start]
    assert middle == pytest.approx(expected, rel=1e-5)
    assert set(by_step[k].values()) == {0.1}


def test_plots_of_a_run_are_png_files(lerac_run):
    run_dir, _ = lerac_run
    assert plots.main([str(run_dir)]) == 0
    for name in ("lr_schedule.png", "history.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_wandb_logs_offline_into_the_run_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # make test disables W&B; this test needs it
    overrides = TINY + ["logger=wandb", "regime=conventional", "trainer.max_epochs=1"]
    overrides += ["trainer.limit_train_batches=2"]
    train(compose_config(overrides), tmp_path / "run")
    offline = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))


def test_same_seed_same_run(tmp_path):
    # 2 epochs: k=1 must end before trainer.max_epochs (a config error otherwise).
    overrides = TINY + ["trainer.max_epochs=2", "trainer.limit_train_batches=3"]
    a = train(compose_config(overrides), tmp_path / "a")
    b = train(compose_config(overrides), tmp_path / "b")
    assert (a["test_acc"], a["val_acc"], a["test_loss"]) == (
        b["test_acc"],
        b["val_acc"],
        b["test_loss"],
    )
    assert (tmp_path / "a" / "history.csv").read_text().split("\n")[1].split(",")[:5] == (
        tmp_path / "b" / "history.csv"
    ).read_text().split("\n")[1].split(",")[:5]


def test_completed_runs_are_skipped_unless_overwritten(tmp_path, lerac_run):
    overrides = TINY + [
        "regime=conventional",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
    ]
    first = train(compose_config(overrides), tmp_path / "run")
    # Mark the stored result: a skipped run gives it back as it is, a retrained one does not.
    metrics_file = tmp_path / "run" / "metrics.json"
    marked = {**first, "marker": "written by the first run"}
    metrics_file.write_text(json.dumps(marked))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same settings: skipped without a word
        assert train(compose_config(overrides), tmp_path / "run") == marked
        # A config saved before the package's wings names the old modules: the same run.
        saved = tmp_path / "run" / "config.yaml"
        text = saved.read_text()
        assert "lerac.suite.models.resnet" in text and "lerac.engine.regimes" in text
        old = OmegaConf.create(
            text.replace("lerac.suite.", "lerac.").replace("lerac.engine.", "lerac.")
        )
        del old["analysis"]  # nor had a config of that time the analysis group
        saved.write_text(OmegaConf.to_yaml(old))
        assert train(compose_config(overrides), tmp_path / "run") == marked
    # Other settings under the same key: an error naming them and the fixes, nothing trained.
    for other, key in (
        (["optimizer.momentum=0.5"], "optimizer.momentum"),
        (["dataset.split_seed=3"], "dataset.split_seed"),
    ):
        with pytest.raises(ConfigError, match=rf"other settings \({key}\); .*tag=.*overwrite=true"):
            train(compose_config(overrides + other), tmp_path / "run")
        assert json.loads(metrics_file.read_text()) == marked
    retrained = train(compose_config(overrides + ["overwrite=true"]), tmp_path / "run")
    assert "marker" not in retrained and "marker" not in json.loads(metrics_file.read_text())
    assert retrained["test_acc"] == first["test_acc"]  # the same settings, the same result
    assert compose_config(overrides).optimizer.momentum == 0.9
    assert "momentum: 0.9" in (tmp_path / "run" / "config.yaml").read_text()


def test_a_failing_run_records_failed_status(tmp_path):
    # lr 1e30 makes the loss explode: the run ends with a clear error and keeps its files.
    overrides = TINY + ["regime=conventional", "optimizer.lr=1e30", "trainer.limit_train_batches=3"]
    with pytest.raises(TrainingDiverged, match="lower optimizer.lr"):
        train(compose_config(overrides), tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["status"] == "failed" and "optimizer.lr" in saved["error"]
    assert (tmp_path / "run" / "layers.csv").is_file()


def flat_fit(regime, tmp_path, **settings):
    """A linear classifier at lr 1e-6, too small to move its validation loss or accuracy:
    the plateau and early-stopping rules then act on a known schedule."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Linear(32, 10))
    store = RunStore(tmp_path)
    defaults = dict(
        max_epochs=12,
        batch_size=256,
        device="cpu",
        progress=False,
        early_stopping_patience=3,
    )
    trainer = Trainer(
        TrainerSettings(**{**defaults, **settings}),
        regime=regime,
        store=store,
        schedule=ReduceOnPlateau(patience=0),
    )
    result = trainer.fit(model, load_digits(), lambda groups: torch.optim.SGD(groups, lr=1e-6))
    store.close()
    return result, read_csv(tmp_path / "history.csv")


def test_conventional_regime_cuts_lr_on_plateau_and_stops_early(tmp_path):
    result, history = flat_fit(Conventional(), tmp_path)
    # Epoch 1 sets the best; epochs 2-4 bring nothing new; patience 3 stops after epoch 4.
    assert result.epochs == 4 and result.best_epoch == 1
    # History shows the lr an epoch trained with; each flat epoch end cuts it 10x
    # (down to ReduceLROnPlateau's eps of 1e-8).
    assert [float(r["lr_max"]) for r in history] == pytest.approx([1e-6, 1e-6, 1e-7, 1e-8])


def test_plateau_and_early_stopping_wait_for_the_curriculum(tmp_path):
    regime = LearningRateCurriculum(k=5, lr_first=1e-6, lr_last=1e-11)
    result, history = flat_fit(regime, tmp_path)
    # Nothing acts during epochs 1-5; from epoch 5's end the conventional rules count:
    # flat epochs 5, 6, 7 exhaust the patience of 3.
    assert result.epochs == 7 and result.best_epoch == 1
    assert [float(r["lr_max"]) for r in history] == pytest.approx([1e-6] * 6 + [1e-7])
    lr_min = [float(r["lr_min"]) for r in history]
    assert lr_min[0] < lr_min[1] < lr_min[2] < lr_min[3] < lr_min[4] < 1e-6
    assert lr_min[5] == pytest.approx(1e-6)
