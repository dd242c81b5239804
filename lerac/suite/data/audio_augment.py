"""The paper's audio augmentation (4.2), on spectrogram batches on the device.

Noise perturbation, time shifting, speed perturbation, mix-up and SpecAugment, in that
order. Each acts on every sample of a training batch with its own probability ``p``
(``p: 0`` switches it off); the settings live in conf/audio/augment.yaml. The paper
names the five methods without settings; the values there are the suite's choice.

The spectrograms are computed once and cached (spectrogram.py), so all five act on the
normalised log-mel map (B, 1, mels, frames) rather than on the waveform:
- noise: Gaussian noise of standard deviation ``std`` added to the map, clamped to [0, 1];
- time shift: the map moves along time by up to ``max_fraction`` of its length either
  way; what moves in is 0 (the clip's quietest level, like silence);
- speed: time is resampled by a factor in [min, max] (> 1 faster, shorter), anchored at
  the start, the end filled with 0. On a mel map this changes the tempo; a waveform speed
  change would also move the pitch, which a mel axis cannot follow linearly;
- SpecAugment (Park et al. 2019) with torchaudio's FrequencyMasking and TimeMasking,
  masks drawn independently per sample, up to ``freq_mask`` and ``time_mask`` of the axis;
- mix-up (Zhang et al. 2018): x = lam * x_i + (1 - lam) * x_j with a random partner j != i
  and lam ~ Beta(alpha, alpha); the targets become soft (B, C) class probabilities
  (the loop takes them as they are).
Randomness comes from torch's global generators, which the entrypoint seeds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from lerac.errors import ConfigError
from lerac.suite.data.base import per_sample
from lerac.suite.data.spectrogram import to_unit


def warp_time(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """out[..., t] = x[..., scale * t - shift * W] per sample (bilinear, zeros outside)."""
    theta = torch.zeros(len(x), 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = scale
    theta[:, 0, 2] = scale - 1 - 2 * shift  # normalised coordinates: t = -1 is the start
    theta[:, 1, 1] = 1
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class Noise:
    def __init__(self, p: float, std: float) -> None:
        self.p, self.std = p, std

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return per_sample(x, self.p, (x + self.std * torch.randn_like(x)).clamp(0, 1)), y


class TimeShift:
    def __init__(self, p: float, max_fraction: float) -> None:
        self.p, self.max_fraction = p, max_fraction

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        shift = (2 * torch.rand(len(x), device=x.device) - 1) * self.max_fraction
        return per_sample(x, self.p, warp_time(x, torch.ones_like(shift), shift)), y


class Speed:
    def __init__(self, p: float, min: float, max: float) -> None:  # noqa: A002 (config keys)
        if not 0 < min <= max:
            raise ConfigError(f"augment.speed needs 0 < min <= max, got min={min}, max={max}")
        self.p, self.low, self.high = p, min, max

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        factor = self.low + (self.high - self.low) * torch.rand(len(x), device=x.device)
        return per_sample(x, self.p, warp_time(x, factor, torch.zeros_like(factor))), y


class SpecAugment:
    def __init__(self, p: float, freq_mask: float, time_mask: float) -> None:
        self.p, self.freq_mask, self.time_mask = p, freq_mask, time_mask

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        import torchaudio.transforms as T

        freq = T.FrequencyMasking(max(1, int(self.freq_mask * x.shape[-2])), iid_masks=True)
        time = T.TimeMasking(max(1, int(self.time_mask * x.shape[-1])), iid_masks=True)
        return per_sample(x, self.p, time(freq(x))), y


class MixUp:
    def __init__(self, p: float, alpha: float, num_classes: int) -> None:
        if alpha <= 0:
            raise ConfigError(f"augment.mixup.alpha must be positive, got {alpha}")
        self.p, self.alpha, self.num_classes = p, alpha, num_classes

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        # One-hot by comparison: F.one_hot reads the labels' range back on the host off CUDA.
        classes = torch.arange(self.num_classes, device=y.device)
        soft = y if y.ndim == 2 else (y[:, None] == classes).to(x.dtype)
        # Parameters made on the device (no host copy) and not checked: a check reads them
        # back on the host, a wait for the GPU per batch.
        alpha = x.new_full((), self.alpha)
        beta = torch.distributions.Beta(alpha, alpha, validate_args=False)
        lam = per_sample(torch.ones(len(x), device=x.device), self.p, beta.sample((len(x),)))
        # A random cycle through the batch: nobody is their own partner (when B > 1).
        order = torch.randperm(len(x), device=x.device)
        partner = torch.empty_like(order)
        partner[order] = order.roll(1)
        mixed = lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[partner]
        return mixed, lam.view(-1, 1) * soft + (1 - lam.view(-1, 1)) * soft[partner]


class AudioAugment:
    """The enabled augmentations in the paper's order, on stored spectrogram batches."""

    def __init__(self, steps: list[Any]) -> None:
        self.steps = steps

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x = to_unit(x)
        for step in self.steps:
            x, y = step(x, y)
        return x, y


STEPS = {
    "noise": Noise,
    "time_shift": TimeShift,
    "speed": Speed,
    "spec_augment": SpecAugment,
    "mixup": MixUp,
}


def build_augment(settings: Mapping[str, Any] | None, num_classes: int) -> AudioAugment | None:
    """The augmentation ``settings`` ask for (name -> {p, ...}); None when all are off."""
    if not settings:
        return None
    unknown = set(settings) - set(STEPS)
    if unknown:
        raise ConfigError(
            f"dataset.augment has unknown entries {sorted(unknown)}; the options are "
            f"{', '.join(STEPS)}"
        )
    steps = []
    for name, cls in STEPS.items():
        options = dict(settings.get(name) or {})
        p = options.get("p", 0)
        if not 0 <= p <= 1:
            raise ConfigError(f"dataset.augment.{name}.p must be in [0, 1], got {p}")
        if p > 0:
            if name == "mixup":
                options["num_classes"] = num_classes
            try:
                steps.append(cls(**options))
            except TypeError as err:
                raise ConfigError(f"dataset.augment.{name}: {err}") from err
    return AudioAugment(steps) if steps else None
