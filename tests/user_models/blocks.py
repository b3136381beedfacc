"""A user's CNN (not in the zoo) with a concatenation, squeeze-excitation, hardswish, SiLU and average pooling."""

import torch
from torch import nn


def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: type | None = nn.ReLU):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, act()) if act else nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x):
        return x * nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(self.pool(x)))))


class Fire(nn.Module):
    """Two branches concatenated along channels, then mixed by a 1x1 conv."""

    def __init__(self, cin: int, branch: int, cout: int):
        super().__init__()
        self.left = conv_bn(cin, branch, 1, act=nn.Hardswish)
        self.right = conv_bn(cin, branch, 3, act=nn.Hardswish)
        self.mix = conv_bn(2 * branch, cout, 1, act=None)

    def forward(self, x):
        return self.mix(torch.cat([self.left(x), self.right(x)], 1))


class InvertedSE(nn.Module):
    """Expand, depthwise, squeeze-excite, project, residual add (MobileNetV3 / EfficientNet style)."""

    def __init__(self, channels: int, expand: int):
        super().__init__()
        self.expand = conv_bn(channels, expand, 1, act=nn.SiLU)
        self.depthwise = conv_bn(expand, expand, 3, groups=expand, act=nn.SiLU)
        self.se = SqueezeExcite(expand, expand // 4)
        self.project = conv_bn(expand, channels, 1, act=None)

    def forward(self, x):
        return x + self.project(self.se(self.depthwise(self.expand(x))))


class Blocks(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 16, 3, stride=2, act=nn.Hardswish)
        self.fire = Fire(16, 12, 24)
        self.block = InvertedSE(24, 48)
        self.pool = nn.AvgPool2d(2, 2)
        self.head = conv_bn(24, 64, 1, act=nn.Hardswish)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(64, num_classes))

    def forward(self, x):
        x = self.block(self.fire(self.stem(x)))
        return self.classifier(self.gap(self.head(self.pool(x))))


def build(num_classes: int = 10) -> nn.Module:
    """The factory ``--model tests/user_models/blocks.py:build`` calls."""
    return Blocks(num_classes)
