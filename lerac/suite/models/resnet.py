"""ResNet-18 (He et al. 2016) with the stem chosen by input size.

Inputs up to 64 px (CIFAR, Tiny ImageNet, digits) get the usual CIFAR stem: a 3x3
stride-1 conv and no max-pool, so small images are not shrunk 4x before the first block.
Larger inputs get the ImageNet stem (7x7 stride-2 conv, 3x3 max-pool). Module names
follow torchvision's (conv1, bn1, layer1..4, fc) so its checkpoints map onto this one.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

SMALL_INPUT_MAX = 64  # px; at or below this the CIFAR stem is used


def stem(
    in_channels: int, width: int, image_size: int | Sequence[int]
) -> tuple[nn.Conv2d, nn.Module]:
    """The first conv and the pooling after it, chosen by input size (module docstring).

    Shared by every ResNet-like model here (ResNet-18, Wide-ResNet-50). ``image_size`` is a
    side or (H, W) (spectrograms); the shorter side decides.
    """
    side = image_size if isinstance(image_size, int) else min(image_size)
    if side <= SMALL_INPUT_MAX:
        return nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.Identity()
    return nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.MaxPool2d(3, 2, 1)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class ResNet18(nn.Module):
    """ResNet-18: four stages of two basic blocks, widths w, 2w, 4w, 8w (w = 64 in the paper).

    Args:
        num_classes: outputs of the classifier.
        in_channels: channels of the input images (any count).
        image_size: input side in px; picks the stem (see module docstring).
        width: channels of the first stage; 64 is the standard ResNet-18.
    """

    def __init__(
        self, num_classes: int, in_channels: int = 3, image_size: int = 32, width: int = 64
    ) -> None:
        super().__init__()
        self.conv1, self.maxpool = stem(in_channels, width, image_size)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        widths = [width, 2 * width, 4 * width, 8 * width]
        in_planes = width
        for i, planes in enumerate(widths):
            stride = 1 if i == 0 else 2
            self.add_module(
                f"layer{i + 1}",
                nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)),
            )
            in_planes = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))
