"""Shared fixtures: configs composed through Hydra, and CIFAR files in the real format."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from lerac.suite.compose import compose_config  # noqa: F401 - the tests' way to compose

# The suite's writers of CIFAR in its real format (SMOKE=synthetic uses them too).
from lerac.suite.synthetic import cifar_batch, write_cifar10, write_cifar100  # noqa: F401

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


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    """A data_dir holding CIFAR-10 (5 x 20 train, 30 test) and CIFAR-100 (100 train, 30 test)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    write_cifar10(root / "cifar-10-batches-py", rng, 20, 30)
    write_cifar100(root / "cifar-100-python", rng, 100, 30)
    return root
