"""The vision augmentations of the paper's Table 13 (``dataset.augment=true``).

Horizontal flip, rotation, solarization, blur, sharpening and auto-contrast, drawn
independently for every image of a training batch. They act on the stored uint8 images
on the device, before normalization. The paper names the six augmentations without their
parameters; the suite's choices are the defaults of :func:`table13`. Off by default: the
paper's main experiments use no augmentation (4.2).

Each step is torchvision's (transforms v2) arithmetic written for a whole batch: every
image gets its own coin flip and, for rotation and blur, its own angle or sigma, and the
step is computed for the batch at once and kept where the coin says so. No index lists,
no per-image Python calls and no value read back on the host, so on a GPU the host never
waits for it. tests/test_vision.py compares each step with torchvision's function.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from lerac.engine.batches import BatchTransform
from lerac.errors import ConfigError
from lerac.suite.data.base import per_sample

BOUND = 255.0  # uint8


def flipped(images: Tensor) -> Tensor:
    return images.flip(-1)


def solarized(images: Tensor, threshold: int = 128) -> Tensor:
    """Pixels at or above ``threshold`` inverted (torchvision's ``solarize``)."""
    return torch.where(images >= threshold, 255 - images, images)


def rotated(images: Tensor, degrees: Tensor) -> Tensor:
    """Each image turned counter-clockwise by its angle about its centre, nearest pixel,
    corners 0 (torchvision's ``rotate`` with its defaults)."""
    n, _, h, w = images.shape
    radians = degrees.double().deg2rad()
    cos, sin = radians.cos().float(), radians.sin().float()
    theta = torch.stack([cos, -sin, sin, cos], dim=1).view(n, 2, 2)
    theta = torch.cat([theta, theta.new_zeros(n, 2, 1)], dim=2)  # (N, 2, 3), no shift
    # torchvision's grid: output pixel centres about the middle, mapped, then normalised.
    xs = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w, device=images.device)
    ys = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h, device=images.device)
    base = torch.stack(
        [xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w, device=images.device)], -1
    )
    scale = torch.tensor([0.5 * w, 0.5 * h], device=images.device)
    grid = base.view(1, h * w, 3).expand(n, -1, -1).bmm(theta.transpose(1, 2).div(scale))
    out = F.grid_sample(
        images.float(), grid.view(n, h, w, 2), "nearest", "zeros", align_corners=False
    )
    return out.round_().to(images.dtype)


def blurred(images: Tensor, sigmas: Tensor, size: int = 3) -> Tensor:
    """Each image blurred by a ``size`` x ``size`` Gaussian of its own sigma, reflected
    borders (torchvision's ``gaussian_blur``)."""
    n, c, h, w = images.shape
    half = (size - 1) / (2.0 * math.sqrt(2.0))
    offsets = torch.linspace(-half, half, size, device=images.device)
    kernel1d = torch.softmax(offsets.div(sigmas[:, None]).pow(2).neg(), dim=1)  # (N, size)
    kernel = kernel1d[:, :, None] * kernel1d[:, None, :]  # (N, size, size)
    weight = kernel[:, None].expand(n, c, size, size).reshape(n * c, 1, size, size)
    pad = size // 2
    padded = F.pad(images.float(), [pad, pad, pad, pad], mode="reflect")
    out = F.conv2d(padded.view(1, n * c, h + 2 * pad, w + 2 * pad), weight, groups=n * c)
    return out.view(n, c, h, w).round_().to(images.dtype)


def sharpened(images: Tensor, factor: float = 2.0) -> Tensor:
    """Sharpness x ``factor``: each inner pixel moved away from its 3x3 smoothing (centre
    weight 5, others 1), the border kept (torchvision's ``adjust_sharpness``)."""
    c = images.shape[1]
    kernel = torch.full((3, 3), 1.0 / 13.0, device=images.device)
    kernel[1, 1] = 5.0 / 13.0
    out = images.float()  # a copy
    smooth = F.conv2d(out, kernel.expand(c, 1, 3, 3), groups=c).round_()
    inner = out[..., 1:-1, 1:-1]
    inner.add_(smooth.sub_(inner), alpha=1.0 - factor)
    return out.clamp_(0, BOUND).to(images.dtype)


def autocontrasted(images: Tensor) -> Tensor:
    """Each image and channel stretched from its [min, max] to [0, 255]; a flat channel is
    left as it is (torchvision's ``autocontrast``)."""
    pixels = images.float()
    low = pixels.amin(dim=(-2, -1), keepdim=True)
    high = pixels.amax(dim=(-2, -1), keepdim=True)
    flat = high == low
    scale = torch.where(flat, 1.0, (high - low).mul_(1.0 / BOUND))
    low = torch.where(flat, 0.0, low)
    return pixels.sub_(low).div_(scale).clamp_(0, BOUND).to(images.dtype)


def table13(
    flip: float = 0.5,
    rotation_degrees: float = 15.0,
    rotation: float = 0.5,
    solarize: float = 0.2,
    blur: float = 0.2,
    sharpen: float = 0.2,
    autocontrast: float = 0.2,
) -> BatchTransform:
    """A per-sample batch augmentation; each argument but ``rotation_degrees`` is the
    probability that an image gets that transform. Solarization inverts pixels at or
    above 128; blur is a 3x3 Gaussian with sigma in [0.1, 2]; sharpening doubles the
    sharpness; rotation is uniform in +-``rotation_degrees``, corners filled with 0."""

    def augment(images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        if images.dtype != torch.uint8:
            raise ConfigError(
                f"dataset.augment=true needs uint8 images (stored {images.dtype}); the Table 13 "
                "augmentations are for image files and CIFAR, not this data set"
            )
        n, device = len(images), images.device
        angles = (2 * torch.rand(n, device=device) - 1) * rotation_degrees
        sigmas = 0.1 + 1.9 * torch.rand(n, device=device)
        steps = (  # (probability, the step on the whole batch), in Table 13's order
            (flip, flipped),
            (rotation, lambda x: rotated(x, angles)),
            (solarize, solarized),
            (blur, lambda x: blurred(x, sigmas)),
            (sharpen, sharpened),
            (autocontrast, autocontrasted),
        )
        for chance, step in steps:
            images = per_sample(images, chance, step(images))
        return images, targets

    return augment


def maybe_table13(augment: bool) -> BatchTransform | None:
    """What a data family stores in ``Splits.augment`` for ``dataset.augment``."""
    return table13() if augment else None
