"""DenseNet-121 (Huang et al. 2017) from torchvision, on spectrograms (paper 4.2).

torchvision's architecture (growth 32, blocks 6/12/24/16, 64 stem features, batch norm,
7x7 stride-2 stem conv and max-pool) with the stem conv taking ``in_channels`` (1 for a
spectrogram) instead of 3, and a head of ``num_classes``. Trained from scratch, as in the
paper (no pretrained weights are loaded). Any input of at least 32 x 32 works; the size
does not change the parameters.

A plain CNN: Curriculum by Smoothing uses its generic rule (smooth after every Conv2d
with a kernel above 1): the 7x7 stem conv and the 3x3 conv of each of the 58 dense layers,
before what follows; the 1x1 bottleneck and transition convs are not smoothed, like the
1x1 shortcut of a ResNet.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models import densenet121


class DenseNet121(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 1) -> None:
        super().__init__()
        net = densenet121(weights=None, num_classes=num_classes)
        stem = net.features.conv0
        net.features.conv0 = nn.Conv2d(
            in_channels,
            stem.out_channels,
            stem.kernel_size,
            stem.stride,
            stem.padding,
            bias=False,
        )
        nn.init.kaiming_normal_(net.features.conv0.weight)  # torchvision's init for convs
        self.features = net.features
        self.classifier = net.classifier

    def forward(self, x: Tensor) -> Tensor:
        x = nn.functional.relu(self.features(x))
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)
