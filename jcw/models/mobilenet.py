"""MobileNetV1 and MobileNetV2 (ImageNet layouts; V2 matches torchvision's state-dict keys)."""

from __future__ import annotations

from torch import Tensor, nn

from jcw.models.common import ConvBNAct, PooledClassifier

# (output channels, stride) of the 13 depthwise-separable blocks of MobileNetV1.
_V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
              (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]

# (expansion t, output channels c, repeats n, first stride s) of MobileNetV2's inverted residuals.
_V2_STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
              (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class MobileNetV1(PooledClassifier):
    """Stem 3x3/2 conv, 13 (depthwise 3x3 + pointwise 1x1) pairs, global pool, linear classifier."""

    def __init__(self, num_classes: int = 1000) -> None:
        layers: list[nn.Module] = [ConvBNAct(3, 32, 3, 2)]
        in_ch = 32
        for out_ch, stride in _V1_BLOCKS:
            layers.append(ConvBNAct(in_ch, in_ch, 3, stride, groups=in_ch))
            layers.append(ConvBNAct(in_ch, out_ch, 1))
            in_ch = out_ch
        super().__init__(nn.Sequential(*layers), nn.Linear(in_ch, num_classes))


class InvertedResidual(nn.Module):
    """Expand 1x1 (skipped when t = 1) -> depthwise 3x3 -> linear project 1x1, identity add if shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_ch * expand
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNAct(in_ch, hidden, 1, act=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            nn.Conv2d(hidden, out_ch, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_ch

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(PooledClassifier):
    """MobileNetV2 1.0x: stem 32, 17 inverted residual blocks, 1x1 conv to 1280, dropout + linear."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        layers: list[nn.Module] = [ConvBNAct(3, 32, 3, 2, act=nn.ReLU6)]
        in_ch = 32
        for t, c, n, s in _V2_STAGES:
            for i in range(n):
                layers.append(InvertedResidual(in_ch, c, s if i == 0 else 1, t))
                in_ch = c
        layers.append(ConvBNAct(in_ch, 1280, 1, act=nn.ReLU6))
        super().__init__(nn.Sequential(*layers), nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes)))


def mobilenet_v1(num_classes: int = 1000) -> MobileNetV1:
    """ImageNet MobileNetV1 1.0x (4,231,976 parameters at 1000 classes)."""
    return MobileNetV1(num_classes)


def mobilenet_v2(num_classes: int = 1000) -> MobileNetV2:
    """ImageNet MobileNetV2 1.0x (3,504,872 parameters at 1000 classes)."""
    return MobileNetV2(num_classes)
