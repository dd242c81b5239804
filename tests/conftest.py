"""Shared fixtures: configs composed through Hydra, and CIFAR files in the real format."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from lerac.suite.compose import compose_config  # noqa: F401 - the tests' way to compose

# Small enough for a CPU test run: a 4-channel ResNet-18, 2 epochs, curriculum of 1 epoch.
TINY = [
    "model.width=4",
    "trainer.max_epochs=2",
    "trainer.batch_size=128",
    "trainer.progress=false",
    "trainer.device=cpu",
    "model.table1.lerac_k=1",
    "logger=none",
]


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny training runs: OpenMP threads spin waiting for
    each other when the cores are shared, ~20x slower; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def cifar_batch(rng, n: int, classes: int, label_key: str) -> dict:
    # The official batches are dicts of a (n, 3072) uint8 array (R, G, B planes of a
    # 32x32 image) and a list of int labels; keys are str once unpickled with latin1.
    return {
        "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        label_key: rng.integers(0, classes, size=n).tolist(),
        "batch_label": "synthetic",
    }


def write_cifar10(folder: Path, rng, per_batch: int, test: int) -> Path:
    """CIFAR-10's cifar-10-batches-py: five training batches and the test batch."""
    for i in range(1, 6):
        write_pickle(folder / f"data_batch_{i}", cifar_batch(rng, per_batch, 10, "labels"))
    write_pickle(folder / "test_batch", cifar_batch(rng, test, 10, "labels"))
    return folder


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    """A data_dir holding CIFAR-10 (5 x 20 train, 30 test) and CIFAR-100 (100 train, 30 test)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    c10 = write_cifar10(root / "cifar-10-batches-py", rng, 20, 30)
    write_pickle(c10 / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    c100 = root / "cifar-100-python"
    write_pickle(c100 / "train", cifar_batch(rng, 100, 100, "fine_labels"))
    write_pickle(c100 / "test", cifar_batch(rng, 30, 100, "fine_labels"))
    return root
