"""MobileNetV3 large and small (ImageNet layouts, torchvision's state-dict keys)."""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn

from jcw.models.common import ConvBNAct, PooledClassifier, SqueezeExcitation

# (kernel, expanded channels, output channels, squeeze-excitation, hardswish (else ReLU), stride) per block.
_LARGE = [(3, 16, 16, False, False, 1), (3, 64, 24, False, False, 2), (3, 72, 24, False, False, 1),
          (5, 72, 40, True, False, 2), (5, 120, 40, True, False, 1), (5, 120, 40, True, False, 1),
          (3, 240, 80, False, True, 2), (3, 200, 80, False, True, 1), (3, 184, 80, False, True, 1),
          (3, 184, 80, False, True, 1), (3, 480, 112, True, True, 1), (3, 672, 112, True, True, 1),
          (5, 672, 160, True, True, 2), (5, 960, 160, True, True, 1), (5, 960, 160, True, True, 1)]
_SMALL = [(3, 16, 16, True, False, 2), (3, 72, 24, False, False, 2), (3, 88, 24, False, False, 1),
          (5, 96, 40, True, True, 2), (5, 240, 40, True, True, 1), (5, 240, 40, True, True, 1),
          (5, 120, 48, True, True, 1), (5, 144, 48, True, True, 1), (5, 288, 96, True, True, 2),
          (5, 576, 96, True, True, 1), (5, 576, 96, True, True, 1)]

# torchvision's MobileNetV3 BatchNorm settings.
_NORM = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)


def make_divisible(value: float, divisor: int = 8) -> int:
    """``value`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``), never more than 10 % down."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class InvertedResidual(nn.Module):
    """Expand 1x1 (skipped when no expansion) -> depthwise kxk -> optional SE -> linear project 1x1,
    identity add when shapes match."""

    def __init__(self, in_ch: int, kernel: int, hidden: int, out_ch: int, use_se: bool, hardswish: bool,
                 stride: int) -> None:
        super().__init__()
        act = nn.Hardswish if hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if hidden != in_ch:
            layers.append(ConvBNAct(in_ch, hidden, 1, act=act, norm=_NORM))
        layers.append(ConvBNAct(hidden, hidden, kernel, stride, groups=hidden, act=act, norm=_NORM))
        if use_se:
            layers.append(SqueezeExcitation(hidden, make_divisible(hidden // 4), nn.ReLU, nn.Hardsigmoid))
        layers.append(ConvBNAct(hidden, out_ch, 1, act=None, norm=_NORM))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and in_ch == out_ch
        self.out_channels = out_ch

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        if self.use_res_connect:
            out = out + x
        return out


class MobileNetV3(PooledClassifier):
    """Hardswish stem 16, inverted residual blocks, 1x1 conv to 6x the last width, then
    Linear -> Hardswish -> Dropout -> Linear."""

    def __init__(self, blocks: list[tuple], last_channel: int, num_classes: int = 1000,
                 dropout: float = 0.2) -> None:
        in_ch = 16
        layers: list[nn.Module] = [ConvBNAct(3, in_ch, 3, 2, act=nn.Hardswish, norm=_NORM)]
        for kernel, hidden, out_ch, use_se, hardswish, stride in blocks:
            layers.append(InvertedResidual(in_ch, kernel, hidden, out_ch, use_se, hardswish, stride))
            in_ch = out_ch
        layers.append(ConvBNAct(in_ch, 6 * in_ch, 1, act=nn.Hardswish, norm=_NORM))
        classifier = nn.Sequential(nn.Linear(6 * in_ch, last_channel), nn.Hardswish(inplace=True),
                                   nn.Dropout(dropout, inplace=True), nn.Linear(last_channel, num_classes))
        super().__init__(nn.Sequential(*layers), classifier)


def mobilenet_v3_large(num_classes: int = 1000) -> MobileNetV3:
    """ImageNet MobileNetV3-Large 1.0x (5,483,032 parameters at 1000 classes)."""
    return MobileNetV3(_LARGE, 1280, num_classes)


def mobilenet_v3_small(num_classes: int = 1000) -> MobileNetV3:
    """ImageNet MobileNetV3-Small 1.0x (2,542,856 parameters at 1000 classes)."""
    return MobileNetV3(_SMALL, 1024, num_classes)
