"""A user's own model for the --model path/to/file.py:factory tests: a small CNN with a residual add.

Uses only what jcw's graph reader handles: convs with BatchNorm and ReLU, a residual add, global
average pooling and one final linear layer.  The other names are deliberately broken factories.
"""

import torch
from torch import nn


class TinyResNet(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(2 * width), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(y)) + x)
        x = self.pool(self.down(x))
        return self.fc(torch.flatten(x, 1))


def build(num_classes: int = 10) -> nn.Module:
    """The factory the tests name: tests/user_models/tiny.py:build."""
    return TinyResNet(num_classes)


def narrow(num_classes: int = 10) -> nn.Module:
    """Another model from the same file, half as wide: an arch of ``build`` (whose stem keeps at least 8
    channels) does not fit it."""
    return TinyResNet(num_classes, width=4)


not_a_factory = 42


def not_a_module(num_classes: int = 10):
    return [nn.Conv2d(3, 8, 3)]


def no_classes():
    return TinyResNet()


def fails(num_classes: int = 10):
    raise RuntimeError("the factory broke")
