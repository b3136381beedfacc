"""CIFAR VGG16 with BatchNorm (13 biased 3x3 conv-BN-ReLU layers, 5 max-pools, one linear layer)."""

from __future__ import annotations

from torch import nn

from jcw.models.common import PooledClassifier

_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG(PooledClassifier):
    """``features`` (conv-BN-ReLU / max-pool sequence), global average pool, ``classifier`` linear."""

    def __init__(self, config: list, num_classes: int = 10) -> None:
        layers: list[nn.Module] = []
        in_ch = 3
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_ch, item, 3, 1, 1), nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
                in_ch = item
        super().__init__(nn.Sequential(*layers), nn.Linear(in_ch, num_classes))


def vgg16(num_classes: int = 10) -> VGG:
    """CIFAR VGG16-BN (14,728,266 parameters at 10 classes: 14.73M)."""
    return VGG(_VGG16, num_classes)
