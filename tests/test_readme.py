"""The README's scheduler example runs as written on a real model and loader."""

import re
from pathlib import Path

import torch
from torch import nn

README = Path(__file__).resolve().parents[1] / "README.md"


def test_scheduler_example_in_readme_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1
    torch.manual_seed(0)
    images, labels = torch.randn(32, 3, 8, 8), torch.randint(0, 4, (32,))
    loader = [(images[i : i + 8], labels[i : i + 8]) for i in range(0, 32, 8)]
    namespace = {
        "MyNet": lambda: nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 4)
        ),
        "example_batch_inputs": images[:2],
        "train_loader": loader,
        "criterion": nn.CrossEntropyLoss(),
        "epochs": 9,
    }
    exec(blocks[0], namespace)
    scheduler, optimizer = namespace["scheduler"], namespace["optimizer"]
    assert scheduler.total_steps == 7 * len(loader) and scheduler.finished
    assert [group["lr"] for group in optimizer.param_groups] == [0.1, 0.1]
