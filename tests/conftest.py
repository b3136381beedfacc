"""Shared test fixtures: a helper giving models random (non-trivial) weights and BatchNorm statistics."""

import pytest
import torch
from torch import nn


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every conv/linear weight and bias and every BatchNorm parameter and statistic random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model


@pytest.fixture
def randomize():
    """``randomize(model, seed=0) -> model`` with random weights and BN statistics (in place)."""
    return _randomize


# One intra-op thread: the test machine's 2 cores are shared, and oversubscribed torch thread
# pools make small convolutions orders of magnitude slower.
torch.set_num_threads(1)
