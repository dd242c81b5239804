"""The vision augmentations of the paper's Table 13 (``dataset.augment=true``).

Horizontal flip, rotation, solarization, blur, sharpening and auto-contrast, with
torchvision's transforms v2, drawn independently for every image of a training batch
(v2 draws one set of parameters per call, so each image gets its own call). They act on
the stored uint8 images on the device, before normalization. The paper names the six
augmentations without their parameters; the suite's choices are the defaults of
:func:`table13`. Off by default: the paper's main experiments use no augmentation (4.2).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lerac.data.base import BatchTransform
from lerac.errors import ConfigError


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
    from torchvision.transforms import v2

    transform = v2.Compose(
        [
            v2.RandomHorizontalFlip(flip),
            v2.RandomApply([v2.RandomRotation(rotation_degrees)], rotation),
            v2.RandomSolarize(threshold=128, p=solarize),
            v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 2.0))], blur),
            v2.RandomAdjustSharpness(2.0, p=sharpen),
            v2.RandomAutocontrast(p=autocontrast),
        ]
    )

    def augment(images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        if images.dtype != torch.uint8:
            raise ConfigError(
                f"dataset.augment=true needs uint8 images (stored {images.dtype}); the Table 13 "
                "augmentations are for image files and CIFAR, not this data set"
            )
        return torch.stack([transform(image) for image in images]), targets

    return augment


def maybe_table13(augment: bool) -> BatchTransform | None:
    """What a data family stores in ``Splits.augment`` for ``dataset.augment``."""
    return table13() if augment else None
