"""Model zoo: registry, exact parameter counts, MACs, torchvision state-dict layouts."""

import math
import operator

import pytest
import torch
from torch import fx, nn

from jcw.layers import describe
from jcw.models import create_model, default_num_classes, default_resolution, list_models
from jcw.models.common import SqueezeExcitation, StochasticDepth

PARAMS = {"resnet18": 11_689_512, "mobilenet_v2": 3_504_872, "mobilenet_v1": 4_231_976,
          "resnet20": 272_474, "resnet56": 855_770, "vgg16": 14_728_266, "resnet50": 25_557_032,
          "mobilenet_v3_large": 5_483_032, "mobilenet_v3_small": 2_542_856, "efficientnet_b0": 5_288_548}
# Conv + linear MACs at the default resolution, from jcw's graph reader (which does not yet read
# squeeze-excitation / hardswish / SiLU, hence no MobileNetV3 or EfficientNet entries).
MACS = {"resnet18": 1.82e9, "mobilenet_v2": 0.30e9, "mobilenet_v1": 0.57e9,
        "resnet20": 41.2e6, "resnet56": 126.8e6, "vgg16": 313.8e6, "resnet50": 4.09e9,
        # the papers' multiply-adds: MobileNetV3 (Howard et al. 2019, table 3), EfficientNet (Tan & Le 2019)
        "mobilenet_v3_large": 219e6, "mobilenet_v3_small": 56e6, "efficientnet_b0": 0.39e9}


def test_registry():
    assert list_models() == sorted(PARAMS)
    assert list_models("resnet*") == ["resnet18", "resnet20", "resnet50", "resnet56"]
    assert all(default_resolution(n) == 224 and default_num_classes(n) == 1000
               for n in ["resnet50", "mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0"])
    assert default_resolution("resnet18") == 224 and default_resolution("vgg16") == 32
    assert default_num_classes("mobilenet_v1") == 1000 and default_num_classes("resnet56") == 10
    with pytest.raises(ValueError, match="known models: efficientnet_b0, mobilenet_v1"):
        create_model("resnet1000")
    with pytest.raises(ValueError, match="num_classes"):
        create_model("resnet20", num_classes=0)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_param_count(name):
    assert sum(p.numel() for p in create_model(name).parameters()) == PARAMS[name]


@pytest.mark.parametrize("name", sorted(MACS))
def test_macs(name):
    spec = describe(create_model(name), default_resolution(name), name)
    macs = sum(x.out_res ** 2 * x.out_ch * x.in_ch // x.groups * x.kernel ** 2 for x in spec.layers)
    assert abs(macs / MACS[name] - 1) <= 0.02


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_forward_shape_and_classes(name):
    res = 32 if default_resolution(name) == 224 else default_resolution(name)
    model = create_model(name, num_classes=7).eval()
    x = torch.randn(2, 3, res, res, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 7) and torch.isfinite(y).all() and y.std() > 0


def _bn(prefix, n):
    return {f"{prefix}.weight": (n,), f"{prefix}.bias": (n,), f"{prefix}.running_mean": (n,),
            f"{prefix}.running_var": (n,), f"{prefix}.num_batches_tracked": ()}


def torchvision_resnet18_keys():
    """Keys/shapes of torchvision.models.resnet18().state_dict(), written out from its definition."""
    keys = {"conv1.weight": (64, 3, 7, 7), **_bn("bn1", 64)}
    in_ch = 64
    for stage, width in enumerate([64, 128, 256, 512], start=1):
        for block in range(2):
            p = f"layer{stage}.{block}"
            keys[f"{p}.conv1.weight"] = (width, in_ch, 3, 3)
            keys.update(_bn(f"{p}.bn1", width))
            keys[f"{p}.conv2.weight"] = (width, width, 3, 3)
            keys.update(_bn(f"{p}.bn2", width))
            if block == 0 and stage > 1:
                keys[f"{p}.downsample.0.weight"] = (width, in_ch, 1, 1)
                keys.update(_bn(f"{p}.downsample.1", width))
            in_ch = width
    keys["fc.weight"] = (1000, 512)
    keys["fc.bias"] = (1000,)
    return keys


def torchvision_mobilenet_v2_keys():
    """Keys/shapes of torchvision.models.mobilenet_v2().state_dict(), written out from its definition."""
    keys = {"features.0.0.weight": (32, 3, 3, 3), **_bn("features.0.1", 32)}
    settings = [(1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1)]
    in_ch, idx = 32, 1
    for t, c, n in settings:
        for _ in range(n):
            p, hidden, j = f"features.{idx}.conv", in_ch * t, 0
            if t != 1:
                keys[f"{p}.0.0.weight"] = (hidden, in_ch, 1, 1)
                keys.update(_bn(f"{p}.0.1", hidden))
                j = 1
            keys[f"{p}.{j}.0.weight"] = (hidden, 1, 3, 3)
            keys.update(_bn(f"{p}.{j}.1", hidden))
            keys[f"{p}.{j + 1}.weight"] = (c, hidden, 1, 1)
            keys.update(_bn(f"{p}.{j + 2}", c))
            in_ch, idx = c, idx + 1
    keys["features.18.0.weight"] = (1280, 320, 1, 1)
    keys.update(_bn("features.18.1", 1280))
    keys["classifier.1.weight"] = (1000, 1280)
    keys["classifier.1.bias"] = (1000,)
    return keys


def torchvision_resnet50_keys():
    """Keys/shapes of torchvision.models.resnet50().state_dict(): Bottleneck blocks (expansion 4), a
    downsample (1x1 conv, BN) on the first block of every stage, layer1's included (64 -> 256)."""
    keys = {"conv1.weight": (64, 3, 7, 7), **_bn("bn1", 64)}
    in_ch = 64
    for stage, (width, depth) in enumerate(zip([64, 128, 256, 512], [3, 4, 6, 3]), start=1):
        for block in range(depth):
            p = f"layer{stage}.{block}"
            keys[f"{p}.conv1.weight"] = (width, in_ch, 1, 1)
            keys.update(_bn(f"{p}.bn1", width))
            keys[f"{p}.conv2.weight"] = (width, width, 3, 3)
            keys.update(_bn(f"{p}.bn2", width))
            keys[f"{p}.conv3.weight"] = (4 * width, width, 1, 1)
            keys.update(_bn(f"{p}.bn3", 4 * width))
            if block == 0:
                keys[f"{p}.downsample.0.weight"] = (4 * width, in_ch, 1, 1)
                keys.update(_bn(f"{p}.downsample.1", 4 * width))
            in_ch = 4 * width
    keys["fc.weight"] = (1000, 2048)
    keys["fc.bias"] = (1000,)
    return keys


def _conv_bn(keys, prefix, out_ch, in_per_group, kernel):
    """A torchvision Conv2dNormActivation: ``prefix.0`` conv (no bias), ``prefix.1`` BatchNorm2d."""
    keys[f"{prefix}.0.weight"] = (out_ch, in_per_group, kernel, kernel)
    keys.update(_bn(f"{prefix}.1", out_ch))


def _se(keys, prefix, ch, squeeze):
    """A torchvision SqueezeExcitation: 1x1 convs fc1, fc2 with bias."""
    keys.update({f"{prefix}.fc1.weight": (squeeze, ch, 1, 1), f"{prefix}.fc1.bias": (squeeze,),
                 f"{prefix}.fc2.weight": (ch, squeeze, 1, 1), f"{prefix}.fc2.bias": (ch,)})


# torchvision's _mobilenet_v3_conf rows (input, kernel, expanded, output) with the SE squeeze width
# _make_divisible(expanded // 4, 8) written out (0: no SE).
TV_MOBILENET_V3 = {
    "mobilenet_v3_large": ([(16, 3, 16, 16, 0), (16, 3, 64, 24, 0), (24, 3, 72, 24, 0), (24, 5, 72, 40, 24),
                            (40, 5, 120, 40, 32), (40, 5, 120, 40, 32), (40, 3, 240, 80, 0), (80, 3, 200, 80, 0),
                            (80, 3, 184, 80, 0), (80, 3, 184, 80, 0), (80, 3, 480, 112, 120),
                            (112, 3, 672, 112, 168), (112, 5, 672, 160, 168), (160, 5, 960, 160, 240),
                            (160, 5, 960, 160, 240)], 1280),
    "mobilenet_v3_small": ([(16, 3, 16, 16, 8), (16, 3, 72, 24, 0), (24, 3, 88, 24, 0), (24, 5, 96, 40, 24),
                            (40, 5, 240, 40, 64), (40, 5, 240, 40, 64), (40, 5, 120, 48, 32), (48, 5, 144, 48, 40),
                            (48, 5, 288, 96, 72), (96, 5, 576, 96, 144), (96, 5, 576, 96, 144)], 1024),
}


def torchvision_mobilenet_v3_keys(name):
    """Keys/shapes of torchvision.models.<name>().state_dict(): ``features.i.block.j`` units, an expand
    conv only where expanded != input, the SE unit between depthwise and project convs."""
    rows, last_channel = TV_MOBILENET_V3[name]
    keys = {}
    _conv_bn(keys, "features.0", 16, 3, 3)
    for i, (in_ch, kernel, hidden, out_ch, squeeze) in enumerate(rows, start=1):
        p, j = f"features.{i}.block", 0
        if hidden != in_ch:
            _conv_bn(keys, f"{p}.0", hidden, in_ch, 1)
            j = 1
        _conv_bn(keys, f"{p}.{j}", hidden, 1, kernel)
        if squeeze:
            j += 1
            _se(keys, f"{p}.{j}", hidden, squeeze)
        _conv_bn(keys, f"{p}.{j + 1}", out_ch, hidden, 1)
    last = 6 * rows[-1][3]
    _conv_bn(keys, f"features.{len(rows) + 1}", last, rows[-1][3], 1)
    keys.update({"classifier.0.weight": (last_channel, last), "classifier.0.bias": (last_channel,),
                 "classifier.3.weight": (1000, last_channel), "classifier.3.bias": (1000,)})
    return keys


def torchvision_efficientnet_b0_keys():
    """Keys/shapes of torchvision.models.efficientnet_b0().state_dict(): stage s is ``features.s``, its
    blocks ``features.s.b.block.j`` (expand conv absent at ratio 1), SE squeeze max(1, input // 4)."""
    stages = [(1, 3, 32, 16, 1), (6, 3, 16, 24, 2), (6, 5, 24, 40, 2), (6, 3, 40, 80, 3),
              (6, 5, 80, 112, 3), (6, 5, 112, 192, 4), (6, 3, 192, 320, 1)]
    keys = {}
    _conv_bn(keys, "features.0", 32, 3, 3)
    for s, (ratio, kernel, in_ch, out_ch, depth) in enumerate(stages, start=1):
        for b in range(depth):
            p, hidden, j = f"features.{s}.{b}.block", in_ch * ratio, 0
            if ratio != 1:
                _conv_bn(keys, f"{p}.0", hidden, in_ch, 1)
                j = 1
            _conv_bn(keys, f"{p}.{j}", hidden, 1, kernel)
            _se(keys, f"{p}.{j + 1}", hidden, max(1, in_ch // 4))
            _conv_bn(keys, f"{p}.{j + 2}", out_ch, hidden, 1)
            in_ch = out_ch
    _conv_bn(keys, "features.8", 1280, 320, 1)
    keys.update({"classifier.1.weight": (1000, 1280), "classifier.1.bias": (1000,)})
    return keys


# Key counts of torchvision's state dicts and entries spelled out by hand from its source (one or more per
# stage: SE fc1/fc2, downsample, BN buffers, the classifier), independent of the generators above.
TV_LAYOUTS = {
    "resnet18": (122, {}),
    "mobilenet_v2": (314, {}),
    "resnet50": (320, {
        "conv1.weight": (64, 3, 7, 7), "bn1.num_batches_tracked": (),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1), "layer1.0.downsample.1.running_mean": (256,),
        "layer1.2.conv3.weight": (256, 64, 1, 1), "layer2.0.conv1.weight": (128, 256, 1, 1),
        "layer2.0.conv2.weight": (128, 128, 3, 3), "layer2.0.downsample.0.weight": (512, 256, 1, 1),
        "layer3.5.bn3.running_var": (1024,), "layer4.0.downsample.1.num_batches_tracked": (),
        "layer4.2.conv3.weight": (2048, 512, 1, 1), "fc.weight": (1000, 2048), "fc.bias": (1000,)}),
    "mobilenet_v3_large": (312, {
        "features.0.0.weight": (16, 3, 3, 3), "features.0.1.num_batches_tracked": (),
        "features.1.block.0.0.weight": (16, 1, 3, 3), "features.1.block.1.1.running_var": (16,),
        "features.2.block.0.0.weight": (64, 16, 1, 1), "features.4.block.1.0.weight": (72, 1, 5, 5),
        "features.4.block.2.fc1.weight": (24, 72, 1, 1), "features.4.block.2.fc1.bias": (24,),
        "features.4.block.2.fc2.weight": (72, 24, 1, 1), "features.4.block.2.fc2.bias": (72,),
        "features.7.block.2.1.running_mean": (80,), "features.11.block.2.fc1.weight": (120, 480, 1, 1),
        "features.15.block.2.fc2.bias": (960,), "features.15.block.3.0.weight": (160, 960, 1, 1),
        "features.16.0.weight": (960, 160, 1, 1), "features.16.1.running_var": (960,),
        "classifier.0.weight": (1280, 960), "classifier.3.weight": (1000, 1280), "classifier.3.bias": (1000,)}),
    "mobilenet_v3_small": (244, {
        "features.1.block.0.0.weight": (16, 1, 3, 3), "features.1.block.1.fc1.weight": (8, 16, 1, 1),
        "features.1.block.1.fc2.bias": (16,), "features.1.block.2.0.weight": (16, 16, 1, 1),
        "features.2.block.0.0.weight": (72, 16, 1, 1), "features.3.block.2.1.num_batches_tracked": (),
        "features.5.block.2.fc1.bias": (64,), "features.7.block.2.fc1.weight": (32, 120, 1, 1),
        "features.11.block.2.fc2.weight": (576, 144, 1, 1), "features.12.0.weight": (576, 96, 1, 1),
        "classifier.0.weight": (1024, 576), "classifier.3.weight": (1000, 1024)}),
    "efficientnet_b0": (360, {
        "features.0.0.weight": (32, 3, 3, 3), "features.1.0.block.0.0.weight": (32, 1, 3, 3),
        "features.1.0.block.1.fc1.weight": (8, 32, 1, 1), "features.1.0.block.1.fc1.bias": (8,),
        "features.1.0.block.2.0.weight": (16, 32, 1, 1), "features.2.0.block.0.0.weight": (96, 16, 1, 1),
        "features.2.0.block.2.fc1.weight": (4, 96, 1, 1), "features.2.1.block.2.fc2.bias": (144,),
        "features.3.1.block.1.0.weight": (240, 1, 5, 5), "features.4.2.block.3.1.running_mean": (80,),
        "features.5.2.block.1.1.num_batches_tracked": (), "features.6.3.block.2.fc1.weight": (48, 1152, 1, 1),
        "features.7.0.block.3.0.weight": (320, 1152, 1, 1), "features.8.0.weight": (1280, 320, 1, 1),
        "features.8.1.running_var": (1280,), "classifier.1.weight": (1000, 1280), "classifier.1.bias": (1000,)}),
}


@pytest.mark.parametrize("name,expected", [
    ("resnet18", torchvision_resnet18_keys), ("mobilenet_v2", torchvision_mobilenet_v2_keys),
    ("resnet50", torchvision_resnet50_keys), ("efficientnet_b0", torchvision_efficientnet_b0_keys),
    ("mobilenet_v3_large", lambda: torchvision_mobilenet_v3_keys("mobilenet_v3_large")),
    ("mobilenet_v3_small", lambda: torchvision_mobilenet_v3_keys("mobilenet_v3_small"))])
def test_torchvision_state_dict_layout(name, expected):
    keys = expected()
    count, spelled_out = TV_LAYOUTS[name]
    assert len(keys) == count
    assert {k: keys.get(k) for k in spelled_out} == spelled_out
    model = create_model(name)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == keys
    checkpoint = {k: torch.randn(s) if s else torch.tensor(3) for k, s in keys.items()}
    create_model(name).load_state_dict(checkpoint, strict=True)


NEW_MODELS = ["resnet50", "mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0"]


@pytest.mark.parametrize("name", NEW_MODELS)
def test_new_models_train_forward(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).train()
    y = model(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    y.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


class _SDLeafTracer(fx.Tracer):
    """fx tracer that keeps StochasticDepth as one call_module node."""

    def is_leaf_module(self, m, qualname):
        return isinstance(m, StochasticDepth) or super().is_leaf_module(m, qualname)


# From torchvision's configs: activation/gate module types, residual adds (stride 1, same width),
# squeeze-excitation multiplies, and StochasticDepth nodes (one per residual MBConv).
FX_GRAPHS = {
    "resnet50": ({nn.ReLU}, 16, 0, 0),
    "mobilenet_v3_large": ({nn.ReLU, nn.Hardswish, nn.Hardsigmoid}, 10, 8, 0),
    "mobilenet_v3_small": ({nn.ReLU, nn.Hardswish, nn.Hardsigmoid}, 6, 9, 0),
    "efficientnet_b0": ({nn.SiLU, nn.Sigmoid}, 9, 16, 9),
}


@pytest.mark.parametrize("name", NEW_MODELS)
def test_new_models_fx_trace(name):
    acts, adds, muls, drops = FX_GRAPHS[name]
    model = create_model(name, num_classes=10)
    for training in (True, False):
        model.train(training)
        fx.symbolic_trace(model)  # the default tracer follows StochasticDepth's forward
        graph = _SDLeafTracer().trace(model)
        modules = dict(model.named_modules())
        types = [type(modules[n.target]) for n in graph.nodes if n.op == "call_module"]
        functions = [n.target for n in graph.nodes if n.op == "call_function"]
        assert acts <= set(types) <= acts | {nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d,
                                             nn.Flatten, nn.Linear, nn.Dropout, nn.ReLU, StochasticDepth}
        assert types.count(StochasticDepth) == drops
        assert sorted(functions, key=str) == sorted([operator.add] * adds + [operator.mul] * muls, key=str)
        assert not [n for n in graph.nodes if n.op == "call_method"]
    assert sum(isinstance(m, SqueezeExcitation) for m in model.modules()) == muls
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fx.symbolic_trace(model.eval())(x), model(x))


def test_stochastic_depth():
    x = torch.randn(4000, 2, 3, 3)
    sd = StochasticDepth(0.3)
    assert sd.eval()(x) is x and StochasticDepth(0.0).train()(x) is x
    assert list(sd.parameters()) == [] and sd.p == 0.3
    with torch.random.fork_rng():
        torch.manual_seed(0)
        y = sd.train()(x)
        torch.manual_seed(0)
        assert torch.equal(sd(x), y)
    kept = y.flatten(1).ne(0).any(1)
    assert torch.allclose(y[kept], x[kept] / 0.7) and (y[~kept] == 0).all()
    assert abs((~kept).float().mean().item() - 0.3) < 0.03
    assert abs(sd(torch.ones(4000, 1, 1, 1)).mean().item() - 1) < 0.05
    assert (StochasticDepth(1.0).train()(x) == 0).all()
    with pytest.raises(ValueError):
        StochasticDepth(1.5)


def test_efficientnet_stochastic_depth_schedule():
    model = create_model("efficientnet_b0")
    ps = [m.p for m in model.modules() if isinstance(m, StochasticDepth)]
    assert ps == pytest.approx([0.2 * i / 16 for i in range(16)])


@pytest.mark.parametrize("name,eps,momentum", [("resnet50", 1e-5, 0.1), ("mobilenet_v3_large", 1e-3, 0.01),
                                               ("mobilenet_v3_small", 1e-3, 0.01), ("efficientnet_b0", 1e-5, 0.1)])
def test_new_models_norm_and_init(name, eps, momentum):
    torch.manual_seed(0)
    model = create_model(name)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert (m.eps, m.momentum) == (eps, momentum)
            assert (m.weight == 1).all() and (m.bias == 0).all()
        elif isinstance(m, nn.Conv2d):
            assert m.bias is None or (m.bias == 0).all()
    conv = max((m for m in model.modules() if isinstance(m, nn.Conv2d)), key=lambda m: m.weight.numel())
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1] // conv.groups
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
    fc = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert (fc.bias == 0).all()
    if name == "efficientnet_b0":  # U(-1/sqrt(1000), 1/sqrt(1000))
        assert fc.weight.abs().max().item() <= 1000 ** -0.5
        assert fc.weight.std().item() == pytest.approx(1000 ** -0.5 / math.sqrt(3), rel=0.05)
    else:  # N(0, 0.01): torchvision's MobileNetV3; resnet50 shares jcw's ResNet init with resnet18
        assert fc.weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_load_model_with_a_seed_builds_the_same_weights_and_leaves_the_global_rng_alone():
    """`jcw search --seed N` starts from load_model(..., seed=N): the same seed, the same weights (the search
    was not reproducible before: the initial weights came from an unseeded generator)."""
    import torch

    from jcw.models import load_model

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = load_model("resnet20", 10, seed=0)
    assert torch.equal(torch.rand(3), expected_next)  # the global generator did not move
    b = load_model("resnet20", 10, seed=0)
    c = load_model("resnet20", 10, seed=1)
    same = [torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values())]
    differ = [not torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values())
              if x.is_floating_point() and x.numel() > 1 and x.std() > 0]
    assert all(same) and any(differ)
