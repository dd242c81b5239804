"""LeRaC in a plain PyTorch loop: a small CNN on synthetic images, LeRaC for k epochs, then
cosine annealing (SequentialLR), with Curriculum by Smoothing attached and decayed per epoch.

    pip install .                # in a checkout; torch is the only dependency
    python examples/plain_loop.py --epochs 4 --k 2 [--cbs-sigma 1.0]
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.lr_scheduler import CosineAnnealingLR, SequentialLR

from lerac import LeRaC, SmoothingCurriculum, curriculum_steps, layer_param_groups


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )


def batches(seed: int = 0, n: int = 4, size: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` batches of random 3x8x8 images; the label is whether the red mean is positive."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, size, 3, 8, 8, generator=generator)
    return [(xb, (xb[:, 0].mean((1, 2)) > 0).long()) for xb in x]


def train(epochs: int = 4, k: int = 2, cbs_sigma: float | None = None) -> list[list[float]]:
    """Every param group's rate at each optimizer step (before it), for all epochs."""
    torch.manual_seed(0)
    model, data = small_cnn(), batches()
    smoothing = SmoothingCurriculum(cbs_sigma, decay=0.9, decay_every=1) if cbs_sigma else None
    groups = layer_param_groups(model, data[0][0], weight_decay=5e-4)
    optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    k_steps = curriculum_steps(k, len(data))
    lerac = LeRaC(optimizer, k_steps, lr_first=0.1, lr_last=1e-6)
    cosine = CosineAnnealingLR(optimizer, T_max=(epochs - k) * len(data))
    scheduler = SequentialLR(optimizer, [lerac, cosine], milestones=[k_steps])
    seen = []
    for epoch in range(epochs):
        if smoothing:
            smoothing.apply(epoch, model)  # attaches the blur once, then sets sigma(epoch)
        for x, y in data:
            seen.append([group["lr"] for group in optimizer.param_groups])
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            scheduler.step()
    return seen


def main(argv: list[str] | None = None) -> list[list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--k", type=int, default=2, help="epochs the curriculum lasts")
    parser.add_argument("--cbs-sigma", type=float, help="attach CBS with this starting sigma")
    options = parser.parse_args(argv)
    seen = train(options.epochs, options.k, options.cbs_sigma)
    for step, rates in enumerate(seen):
        print(json.dumps({"step": step, "first_layer": rates[0], "last_layer": rates[-1]}))
    return seen


if __name__ == "__main__":
    main()
