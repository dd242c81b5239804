"""Wide-ResNet-50-2 (Zagoruyko & Komodakis 2016), torchvision's, with our stem rule.

torchvision's ``wide_resnet50_2``: ResNet-50's bottleneck layout (3, 4, 6, 3 blocks) with
the inner 3x3 convs twice as wide (``width_per_group`` 128), ~67M parameters. Its
7x7 stride-2 stem and max-pool are swapped for the 3x3 stride-1 stem without pooling on
inputs up to 64 px, the same rule as our ResNet-18 (:func:`lerac.suite.models.resnet.stem`),
and the stem takes any channel count (1-channel spectrograms, grayscale images).
Module names stay torchvision's, so its checkpoints map onto this one.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import ResNet
from torchvision.models.resnet import Bottleneck

from lerac.suite.models.resnet import stem


def wide_resnet50(
    num_classes: int, in_channels: int = 3, image_size: int = 32, width_per_group: int = 128
) -> ResNet:
    """Wide-ResNet-50-2; ``width_per_group`` 64 would be ResNet-50, 128 is the paper's."""
    model = ResNet(
        Bottleneck, [3, 4, 6, 3], num_classes=num_classes, width_per_group=width_per_group
    )
    model.conv1, model.maxpool = stem(in_channels, 64, image_size)
    # torchvision's own init for convs, applied to the replaced stem as well.
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model
