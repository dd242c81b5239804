"""What the data families share beyond the engine's batches (lerac.engine.batches): the
input spec a model is told, a seeded hold-out split, per-channel statistics, and the
usual image splits.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lerac.engine.batches import Inputs, Splits, take


def image_input(in_channels: int, image_size: int | tuple[int, int]) -> dict[str, Any]:
    """What a model of images (or spectrograms: (mel bins, frames)) is told of its inputs."""
    return {"in_channels": in_channels, "image_size": image_size}


def text_input(vocab_size: int, max_length: int) -> dict[str, Any]:
    """What a model of token ids is told of its inputs."""
    return {"vocab_size": vocab_size, "max_length": max_length}


def per_sample(x: Tensor, p: float, augmented: Tensor) -> Tensor:
    """``augmented`` where a sample is drawn (probability ``p``), ``x`` elsewhere. The whole
    batch is augmented and then chosen from: no index lists, so no device sync."""
    pick = torch.rand(len(x), device=x.device) < p
    return torch.where(pick.view(-1, *[1] * (x.ndim - 1)), augmented, x)


def hold_out(
    inputs: Inputs, targets: Tensor, fraction: float, seed: int
) -> tuple[tuple[Inputs, Tensor], tuple[Inputs, Tensor]]:
    """Split off ``fraction`` of the examples, chosen by a permutation seeded with ``seed``."""
    n = len(targets)
    n_out = int(round(n * fraction))
    if not 0 < n_out < n:
        raise ValueError(f"cannot hold out {fraction:.0%} of {n} examples")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    keep, out = order[n_out:], order[:n_out]
    return (take(inputs, keep), targets[keep]), (take(inputs, out), targets[out])


def channel_stats(images: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std of (N, C, H, W) images, shaped (1, C, 1, 1)."""
    x = images.float()
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    std = x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return mean, std


def image_splits(
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    num_classes: int,
    val_fraction: float,
    split_seed: int,
) -> Splits:
    """Hold ``val_fraction`` of train out for validation; normalize with train statistics."""
    train, val = hold_out(train_images, train_labels, val_fraction, split_seed)
    mean, std = channel_stats(train[0])
    return Splits(
        train=train,
        val=val,
        test=(test_images, test_labels),
        num_classes=num_classes,
        input_spec=image_input(train_images.shape[1], train_images.shape[-1]),
        mean=mean,
        std=std,
    )
