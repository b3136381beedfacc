"""Shared test fixtures: a helper giving models random (non-trivial) weights and BatchNorm statistics."""

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from torch import nn

USER_MODELS = Path(__file__).parent / "user_models"

# Tests run the load-time kernel variant: no first-use autotune (a measurement, written to the user's
# cache dir) behind an Engine; tests/test_autotune.py turns it back on where it is the subject.
os.environ.setdefault("JCW_AUTOTUNE", "0")


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


def _tiny_net(width: int = 8, classes: int = 3, norm: bool = True, seed: int = 0) -> nn.Sequential:
    """conv1 (3 -> width) [bn1] relu1, conv2 (width -> 2 width, stride 2) relu2, global pool, fc (-> classes);
    torch's default initialisation drawn from ``seed`` (the global RNG is restored afterwards)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential()
        model.add_module("conv1", nn.Conv2d(3, width, 3, padding=1))
        if norm:
            model.add_module("bn1", nn.BatchNorm2d(width))
        model.add_module("relu1", nn.ReLU())
        model.add_module("conv2", nn.Conv2d(width, 2 * width, 3, stride=2, padding=1))
        model.add_module("relu2", nn.ReLU())
        model.add_module("pool", nn.AdaptiveAvgPool2d(1))
        model.add_module("flat", nn.Flatten())
        model.add_module("fc", nn.Linear(2 * width, classes))
    return model


@pytest.fixture
def tiny_net():
    """``tiny_net(width=8, classes=3, norm=True, seed=0) -> nn.Sequential``: the small conv net of the training tests."""
    return _tiny_net


@pytest.fixture
def randomize():
    """``randomize(model, seed=0) -> model`` with random weights and BN statistics (in place)."""
    return _randomize


# One intra-op thread: the test machine's 2 cores are shared, and oversubscribed torch thread
# pools make small convolutions orders of magnitude slower.
torch.set_num_threads(1)


def _user_model(name: str, num_classes: int = 10) -> nn.Module:
    """``build(num_classes)`` of tests/user_models/<name>.py: a model written by a user, not in the zoo."""
    spec = importlib.util.spec_from_file_location(f"_jcw_user_model_{name}", USER_MODELS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build(num_classes)


@pytest.fixture
def user_model():
    """Fixture: the loader of tests/user_models/<name>.py models (``user_model("blocks", num_classes)``)."""
    return _user_model


def _blocks_spec():
    """NetSpec of tests/user_models/blocks.py (concat, squeeze-excitation, hardswish, SiLU, a windowed
    average pool) at 32 px, 10 classes."""
    from jcw.layers import describe

    return describe(_user_model("blocks", 10), 32, "blocks")


class _Fixed(nn.Module):
    """Channels jcw cannot prune: a roll along channels (an op the graph reader cannot follow) feeds
    a depthwise conv (group -1) and a concatenation with a prunable branch; squeeze-excitation with a
    sigmoid gate, a standalone GELU, a leaky-ReLU conv, a hidden linear layer."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.branch = nn.Sequential(nn.Conv2d(16, 20, 1, bias=False), nn.BatchNorm2d(20), nn.LeakyReLU())
        self.mix = nn.Sequential(nn.Conv2d(36, 32, 1, bias=False), nn.BatchNorm2d(32), nn.SiLU())
        self.se1, self.se2 = nn.Conv2d(32, 8, 1), nn.Conv2d(8, 32, 1)
        self.hidden, self.fc = nn.Linear(32, 24), nn.Linear(24, 5)

    def forward(self, x):
        x = self.stem(x)
        fixed = self.dw(torch.roll(x, 1, dims=1))
        x = nn.functional.gelu(torch.cat([self.branch(x), fixed], 1))
        x = self.mix(x)
        x = x * torch.sigmoid(self.se2(torch.relu(self.se1(x.mean((2, 3), keepdim=True)))))
        return self.fc(torch.relu(self.hidden(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))))


def _fixed_spec():
    from jcw.layers import describe

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return describe(_Fixed(), 16, "fixed")


@pytest.fixture(scope="session")
def blocks_spec():
    """NetSpec of tests/user_models/blocks.py at 32 px."""
    return _blocks_spec()


@pytest.fixture(scope="session")
def fixed_spec():
    """NetSpec with group -1 layers and parts, SE, GELU/leaky ReLU/SiLU, a hidden linear (see _Fixed)."""
    return _fixed_spec()
