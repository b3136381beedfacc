"""Building blocks shared by the zoo: conv-BN-activation, squeeze-excitation, stochastic depth, the
pooled-classifier layout, weight initialisation."""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d (``norm(out_ch)``) -> activation; children named 0, 1, 2 like torchvision's."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.ReLU,
                 norm: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            norm(out_ch),
        ]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """Channel gate ``x * gate(fc2(act(fc1(avgpool(x)))))`` with 1x1 convs fc1/fc2 (torchvision's keys)."""

    def __init__(self, channels: int, squeeze: int, act: type[nn.Module] = nn.ReLU,
                 gate: type[nn.Module] = nn.Hardsigmoid) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.activation = act()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.scale_activation = gate()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class StochasticDepth(nn.Module):
    """Row-mode stochastic depth on (N, C, H, W) maps: in training, zero each sample with probability ``p``
    and scale the survivors by 1 / (1 - p); the identity in eval mode or when ``p`` is 0. No parameters."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"drop probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        noise = x.new_empty((x.shape[0], 1, 1, 1)).bernoulli_(keep)
        if keep > 0.0:
            noise = noise / keep
        return x * noise

    def extra_repr(self) -> str:
        return f"p={self.p}"


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal (fan_out) convs, unit-scale zero-shift BN, N(0, 0.01) linear layers."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


class PooledClassifier(nn.Module):
    """``features`` -> global average pool -> flatten -> ``classifier`` (torchvision's layout and keys).

    Subclasses build both parts (features first, in that order) and hand them over; weights are then
    re-initialised by ``init_weights``.
    """

    def __init__(self, features: nn.Sequential, classifier: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = classifier
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.avgpool(self.features(x))))
