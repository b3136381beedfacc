"""EfficientNet-B0 (ImageNet layout, torchvision's state-dict keys)."""

from __future__ import annotations

import math

from torch import Tensor, nn

from jcw.models.common import ConvBNAct, PooledClassifier, SqueezeExcitation, StochasticDepth

# (expand ratio, kernel, first stride, output channels, repeats) of B0's seven MBConv stages.
_B0_STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
              (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


class MBConv(nn.Module):
    """Expand 1x1 (skipped when the ratio is 1) -> depthwise kxk -> SE -> linear project 1x1, all SiLU;
    stochastic depth on the block output before the identity add when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int, drop: float) -> None:
        super().__init__()
        hidden = in_ch * expand
        layers: list[nn.Module] = []
        if hidden != in_ch:
            layers.append(ConvBNAct(in_ch, hidden, 1, act=nn.SiLU))
        layers += [
            ConvBNAct(hidden, hidden, kernel, stride, groups=hidden, act=nn.SiLU),
            SqueezeExcitation(hidden, max(1, in_ch // 4), nn.SiLU, nn.Sigmoid),
            ConvBNAct(hidden, out_ch, 1, act=None),
        ]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(drop)
        self.use_res_connect = stride == 1 and in_ch == out_ch
        self.out_channels = out_ch

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        if self.use_res_connect:
            out = self.stochastic_depth(out) + x
        return out


class EfficientNet(PooledClassifier):
    """SiLU stem 32, MBConv stages (one ``features`` entry each), 1x1 conv to 1280, dropout + linear.

    The stochastic-depth probability grows linearly from 0 over the blocks up to ``stochastic_depth``
    (exclusive); the classifier's linear layer is drawn from U(-1/sqrt(classes), 1/sqrt(classes)).
    """

    def __init__(self, stages: list[tuple], num_classes: int = 1000, dropout: float = 0.2,
                 stochastic_depth: float = 0.2) -> None:
        in_ch = 32
        layers: list[nn.Module] = [ConvBNAct(3, in_ch, 3, 2, act=nn.SiLU)]
        total, index = sum(s[-1] for s in stages), 0
        for expand, kernel, stride, out_ch, repeats in stages:
            blocks = []
            for i in range(repeats):
                drop = stochastic_depth * index / total
                blocks.append(MBConv(in_ch, out_ch, kernel, stride if i == 0 else 1, expand, drop))
                in_ch, index = out_ch, index + 1
            layers.append(nn.Sequential(*blocks))
        layers.append(ConvBNAct(in_ch, 4 * in_ch, 1, act=nn.SiLU))
        classifier = nn.Sequential(nn.Dropout(dropout, inplace=True), nn.Linear(4 * in_ch, num_classes))
        super().__init__(nn.Sequential(*layers), classifier)
        bound = 1.0 / math.sqrt(num_classes)
        nn.init.uniform_(classifier[1].weight, -bound, bound)


def efficientnet_b0(num_classes: int = 1000) -> EfficientNet:
    """ImageNet EfficientNet-B0 (5,288,548 parameters at 1000 classes)."""
    return EfficientNet(_B0_STAGES, num_classes)
