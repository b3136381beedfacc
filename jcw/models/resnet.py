"""ResNets: ImageNet ResNet18/50 (torchvision state-dict layout) and CIFAR ResNet20/56 (1x1-conv shortcuts)."""

from __future__ import annotations

from torch import Tensor, nn

from jcw.models.common import init_weights


def _shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Sequential | None:
    """The projection shortcut (1x1 conv-BN, torchvision's ``downsample``) when the shape changes, else None."""
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, 0, bias=False), nn.BatchNorm2d(out_ch))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut (identity, or 1x1 conv-BN when the shape changes)."""

    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = _shortcut(in_ch, out_ch, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride, as torchvision v1.5) -> 1x1 expand to 4x ``width``, plus a
    shortcut (identity, or 1x1 conv-BN when the shape changes)."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, 1, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, 1, 0, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_ch, out_ch, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A stack of ``block`` stages; ``imagenet_stem`` picks 7x7/2 + maxpool, else a 3x3/1 stem."""

    def __init__(self, widths: list[int], depths: list[int], num_classes: int, imagenet_stem: bool,
                 block: type[BasicBlock | Bottleneck] = BasicBlock) -> None:
        super().__init__()
        stem_ch = widths[0]
        if imagenet_stem:
            self.conv1 = nn.Conv2d(3, stem_ch, 7, 2, 3, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, stem_ch, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_ch)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if imagenet_stem else None
        in_ch = stem_ch
        for i, (width, depth) in enumerate(zip(widths, depths)):
            blocks = []
            for b in range(depth):
                blocks.append(block(in_ch, width, 2 if (b == 0 and i > 0) else 1))
                in_ch = width * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_stages = len(widths)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        if self.maxpool is not None:
            x = self.maxpool(x)
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(self.flatten(self.avgpool(x)))


def resnet18(num_classes: int = 1000) -> ResNet:
    """ImageNet ResNet18 (11,689,512 parameters at 1000 classes)."""
    return ResNet([64, 128, 256, 512], [2, 2, 2, 2], num_classes, imagenet_stem=True)


def resnet50(num_classes: int = 1000) -> ResNet:
    """ImageNet ResNet50 v1.5 (25,557,032 parameters at 1000 classes)."""
    return ResNet([64, 128, 256, 512], [3, 4, 6, 3], num_classes, imagenet_stem=True, block=Bottleneck)


def resnet20(num_classes: int = 10) -> ResNet:
    """CIFAR ResNet20 with 1x1 conv shortcuts (272,474 parameters at 10 classes)."""
    return ResNet([16, 32, 64], [3, 3, 3], num_classes, imagenet_stem=False)


def resnet56(num_classes: int = 10) -> ResNet:
    """CIFAR ResNet56 with 1x1 conv shortcuts (855,770 parameters at 10 classes)."""
    return ResNet([16, 32, 64], [9, 9, 9], num_classes, imagenet_stem=False)
