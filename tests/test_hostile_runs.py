"""The one-`error:`-line promise where it broke, and what runs leave behind: a full disk
mid-training (ENOSPC from the write path), Hydra's typos, a tag that is a path, weights
fetched with `--from` that load offline or cannot load, temporary files of killed
processes, a grid whose data is missing, SMOKE on synthetic data."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lerac.engine.checkpoint import CHECKPOINT, Checkpoint
from lerac.engine.io import cached, temporary_name
from lerac.engine.store import read_metrics
from lerac.errors import ConfigError
from lerac.suite import fetch, grid
from lerac.suite.train import train
from tests.audio_fixtures import SMALL_SPECTROGRAM
from tests.cli_fixtures import error_line
from tests.conftest import TINY, compose_config
from tests.test_grid import MINI, PAPER
from tests.test_reliability import RESUMABLE, assert_same_run
from tests.text_fixtures import write_tiny_model

KEY = "digits_resnet18_lerac_seed0"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: faster on one thread of two shared cores
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference") / KEY
    return run_dir, train(compose_config(RESUMABLE), run_dir)


def test_a_full_disk_mid_training_is_one_line_and_the_run_resumes(
    tmp_path, monkeypatch, capsys, uninterrupted
):
    # The disk fills while the second epoch's checkpoint is written; from then on every
    # write fails (metrics.json, error.log too), as on a real full file system.
    save, saved, full = Checkpoint.save, [], []

    def save_until_full(self, state):
        if saved:
            full.append(True)
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(save(self, state))

    def fsync(fd):
        if full:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Checkpoint, "save", save_until_full)
    monkeypatch.setattr("lerac.engine.io.os.fsync", fsync)
    out = tmp_path / "out"
    line = error_line(monkeypatch, capsys, [*RESUMABLE, f"paths.output_dir={out}"])
    assert "no space left on the device" in line and "run the same command to resume" in line
    assert Checkpoint(out / KEY).load()["progress"]["epoch"] == 1  # the last whole epoch
    assert read_metrics(out / KEY)["status"] == "running"  # could not be rewritten
    assert not list((out / KEY).glob("*.tmp"))
    monkeypatch.undo()
    assert_same_run(out / KEY, train(compose_config(RESUMABLE), out / KEY), uninterrupted)


HYDRA_TYPOS = [
    (["dataset=nonexist"], ["dataset=nonexist is not an option", "cifar10, cifar100"]),
    (["dataset=cifar"], ["did you mean dataset=cifar10?"]),
    (["trainer.max_epoch=3"], ["max_epoch is not a key", "did you mean trainer.max_epochs?"]),
    (["model=resnet50"], ["model=resnet50 is not an option", "resnet18"]),
    (["-m", "regime=conventional,lercc"], ["regime=lercc is not an option", "regime=lerac?"]),
    (["regime=conventional,lerac"], ["lists several values", "add -m"]),
    (["model.width=[1"], ["an override does not parse"]),
]


@pytest.mark.parametrize("overrides, words", HYDRA_TYPOS, ids=[" ".join(o) for o, _ in HYDRA_TYPOS])
def test_hydra_typos_are_one_line_with_the_closest_name(
    overrides, words, tmp_path, monkeypatch, capsys
):
    multirun = [o for o in overrides if o == "-m"]
    argv = [*multirun, *TINY, f"paths.output_dir={tmp_path}", *(o for o in overrides if o != "-m")]
    line = error_line(monkeypatch, capsys, argv)
    for word in words:
        assert word in line, line
    assert list(tmp_path.iterdir()) == []  # nothing composed far enough to make a folder


def test_a_tag_that_is_a_path_never_lands_outside_the_output_folder(tmp_path, monkeypatch, capsys):
    out = tmp_path / "a" / "out"
    out.mkdir(parents=True)
    line = error_line(monkeypatch, capsys, [*TINY, f"paths.output_dir={out}", "tag=../../escaped"])
    assert "tag='../../escaped' is not valid" in line and "may not hold /" in line
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["a", "a/out"]
    with pytest.raises(ConfigError, match="tag='../x' is not valid"):
        train(compose_config([*TINY, "tag=../x"]), tmp_path / "run")
    # hydra.run.dir pointed elsewhere by hand: refused before training there.
    elsewhere = f"hydra.run.dir={tmp_path / 'elsewhere'}"
    line = error_line(monkeypatch, capsys, [*TINY, f"paths.output_dir={out}", elsewhere])
    assert "lies outside paths.output_dir" in line
    assert not list((tmp_path / "elsewhere").glob("metrics.json"))


def text_run(folder: Path, *extra: str) -> list[str]:
    """BERT on a small text_files set: the overrides of a quick run."""
    rows = "".join(f"the cat sat on mat {i},{'pos' if i % 2 else 'neg'}\n" for i in range(24))
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        (folder / f"{split}.csv").write_text("text,label\n" + rows)
    return [
        "model=bert_large", "dataset=text_files", f"dataset.path={folder}",
        "model.tokenizer.max_length=32", "trainer.max_epochs=2", "model.table1.lerac_k=1",
        "trainer.batch_size=8", "trainer.limit_train_batches=1", "trainer.limit_eval_batches=1",
        "trainer.progress=false", "trainer.device=cpu", "logger=none", *extra,
    ]  # fmt: skip


def test_weights_fetched_with_from_train_offline_and_unloadable_ones_are_one_line(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    data = tmp_path / "data"
    monkeypatch.setenv("LERAC_DATA_DIR", str(data))
    model = write_tiny_model(tmp_path / "tiny-bert")
    args = ["--data-dir", str(data), "--quiet"]
    assert fetch.main(["bert-large-uncased", "--from", str(model), *args]) == 0
    run = text_run(tmp_path / "text", f"paths.output_dir={tmp_path / 'out'}")
    metrics = train(compose_config(run), tmp_path / "out" / "run")  # offline, by its hub id
    assert metrics["status"] == "completed"
    # A weight file that asks to run code passes the fetch's structural check and is then
    # refused by the loader (weights_only): one line naming the folder.
    (model / "model.safetensors").unlink()
    torch.save({"weight": Payload()}, model / "pytorch_model.bin")
    assert fetch.main(["bert-large-uncased", "--from", str(model), "--force", *args]) == 0
    line = error_line(monkeypatch, capsys, [*run, "tag=bad"])
    assert "could not be loaded from the directory" in line and "bert-large-uncased" in line
    assert "lerac-fetch NAME --force" in line
    # A header no loader reads: refused by the fetch itself.
    broken = write_tiny_model(tmp_path / "broken")
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes().replace(b'"F32"', b'"X32"', 1))
    assert fetch.main(["bert-large-uncased", "--from", str(broken), "--force", *args]) == 2
    assert "a header that no loader reads" in capsys.readouterr().err


class Payload:
    def __reduce__(self):
        return os.system, ("true",)


def test_temporary_files_of_killed_processes_are_removed(tmp_path):
    # Run folder: the run holds its lock, so every leftover there is stale.
    run_dir = tmp_path / KEY
    run_dir.mkdir()
    for name in ("metrics.json.4242-1.tmp", f"{CHECKPOINT}.4242-1@elsewhere.tmp"):
        (run_dir / name).write_bytes(b"half")
    train(compose_config(TINY + ["trainer.max_epochs=2", "trainer.limit_train_batches=1"]), run_dir)
    assert not list(run_dir.glob("*.tmp"))
    # A cache folder, shared: a dead writer's leftover goes, a live one's and another
    # machine's stay.
    cache = tmp_path / "cache"
    cache.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    host = socket.gethostname()
    stale = cache / f"images-1.pt.{dead}-1@{host}.tmp"
    live = temporary_name(cache / "images-2.pt")
    remote = cache / f"images-3.pt.{dead}-1@another-node.tmp"
    for leftover in (stale, live, remote):
        leftover.write_bytes(b"half")
    assert cached(cache / "text.pt", lambda: {"x": torch.ones(2)})["x"].sum() == 2
    assert not stale.exists() and live.exists() and remote.exists()


# --- a grid: its data checked once; SMOKE on synthetic data --------------------------------

DATA_GRID = MINI.replace("override /dataset: digits", "override /dataset: cifar10").replace(
    "      regime: conventional,lerac\n      seed: 0,1\n",
    "      regime: conventional\n      seed: 0\n",
)


@pytest.fixture
def data_grid(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (tmp_path / "paper.csv").write_text(PAPER)
    text = DATA_GRID.format(out=tmp_path / "out", paper=tmp_path / "paper.csv",
                            results=tmp_path / "results")  # fmt: skip
    small = ", ".join(o.replace("=", ": ") for o in SMALL_SPECTROGRAM if "sample_rate" not in o)
    text = text.replace("tagged: {regime: lerac, seed: 2", f"audio: {{dataset: esc50, {small}")
    text = text.replace("tag: 'k\\${model.table1.lerac_k}'}", "}")
    (conf / "mini.yaml").write_text(text)
    return tmp_path, [f"hydra.searchpath=[file://{tmp_path / 'conf'}]"]


def test_a_grid_with_missing_data_stops_once_before_any_run(data_grid, capsys):
    root, search = data_grid
    data = f"paths.data_dir={root / 'data'}"
    assert grid.main(["mini", *search, data, "--no-report"]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the grid reads data"), err
    assert "cifar10, esc50" in lines[0] and "lerac-fetch cifar10 esc50" in lines[0]
    assert 'make data DATASETS="cifar10 esc50"' in lines[0]
    assert "fetch_data.py" not in err and "runs:" not in out
    assert not (root / "out").exists()  # no run started


def test_smoke_on_synthetic_data_runs_the_whole_grid(data_grid, capsys):
    root, search = data_grid
    args = ["mini", *search, "--synthetic", "--no-report"]
    assert grid.main(args) == 0, capsys.readouterr().err
    smoke = root / "out_smoke"
    for key in ("cifar10_resnet18_conventional_seed0", "esc50_resnet18_conventional_seed0"):
        metrics = json.loads((smoke / key / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["epochs"] == 2
    assert (smoke / "data" / "ESC-50" / "meta" / "esc50.csv").is_file()
    assert (smoke / "data" / "cifar-10-batches-py" / "data_batch_5").is_file()


def test_every_synthetic_copy_is_read_by_its_loader(tmp_path):
    from transformers import AutoModelForImageClassification, AutoTokenizer

    from lerac.suite.build import build_data
    from lerac.suite.models.hub import from_pretrained
    from lerac.suite.synthetic import WRITERS, write_synthetic

    data = tmp_path / "data"
    write_synthetic(list(WRITERS), data)
    small = [o for o in SMALL_SPECTROGRAM if "sample_rate" not in o]
    models = {"boolq": "lstm", "rte": "lstm", "qnli": "lstm"}
    for name in ("cifar10", "cifar100", "tiny_imagenet", "imagenet200", "esc50", "crema_d",
                 "boolq", "rte", "qnli"):  # fmt: skip
        extra = small if name in ("esc50", "crema_d") else []
        cfg = compose_config([f"dataset={name}", f"model={models.get(name, 'resnet18')}",
                              f"paths.data_dir={data}", *extra])  # fmt: skip
        splits = build_data(cfg)
        assert len(splits.test[1]) > 0 and splits.num_classes >= 2, name
    model = from_pretrained(AutoModelForImageClassification, str(data / "weights" / "cvt-13"))
    assert model.config.model_type == "cvt"
    tokenizer = AutoTokenizer.from_pretrained(data / "weights" / "bert-large-uncased")
    assert tokenizer("the cat sat")["input_ids"][0] == tokenizer.cls_token_id


def test_a_typo_given_to_the_grid_is_one_line_with_the_closest_name(capsys):
    assert grid.main(["demo", "trainer.max_epoch=3", "--dry"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "error: trainer.max_epoch is not a key of the config: did you mean trainer.max_epochs?"
    )
