"""Model zoo: registry, exact parameter counts, MACs, torchvision state-dict layouts."""

import pytest
import torch

from jcw.layers import describe
from jcw.models import create_model, default_num_classes, default_resolution, list_models

PARAMS = {"resnet18": 11_689_512, "mobilenet_v2": 3_504_872, "mobilenet_v1": 4_231_976,
          "resnet20": 272_474, "resnet56": 855_770, "vgg16": 14_728_266}
MACS = {"resnet18": 1.82e9, "mobilenet_v2": 0.30e9, "mobilenet_v1": 0.57e9,
        "resnet20": 41.2e6, "resnet56": 126.8e6, "vgg16": 313.8e6}


def test_registry():
    assert list_models() == sorted(PARAMS)
    assert list_models("resnet*") == ["resnet18", "resnet20", "resnet56"]
    assert default_resolution("resnet18") == 224 and default_resolution("vgg16") == 32
    assert default_num_classes("mobilenet_v1") == 1000 and default_num_classes("resnet56") == 10
    with pytest.raises(ValueError, match="known models: mobilenet_v1"):
        create_model("resnet1000")
    with pytest.raises(ValueError, match="num_classes"):
        create_model("resnet20", num_classes=0)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_param_count_and_macs(name):
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    spec = describe(model, default_resolution(name), name)
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


@pytest.mark.parametrize("name,expected", [("resnet18", torchvision_resnet18_keys),
                                           ("mobilenet_v2", torchvision_mobilenet_v2_keys)])
def test_torchvision_state_dict_layout(name, expected):
    keys = expected()
    assert len(keys) == {"resnet18": 122, "mobilenet_v2": 314}[name]
    model = create_model(name)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == keys
    checkpoint = {k: torch.randn(s) if s else torch.tensor(3) for k, s in keys.items()}
    create_model(name).load_state_dict(checkpoint, strict=True)
