"""Layer description: fx-derived coupling groups, shipped specs, NetSpec JSON and resolution changes."""

import pytest
import torch
from torch import nn

from jcw.layers import describe, trace, write_specs
from jcw.models import create_model, default_resolution, list_models
from jcw.core.netspec import NetSpec, load_shipped

GENES = {"resnet18": (12, 20), "mobilenet_v1": (14, 14), "mobilenet_v2": (25, 35),
         "resnet20": (12, 21), "resnet56": (30, 57), "vgg16": (13, 13)}


@pytest.mark.parametrize("name", list_models())
def test_shipped_spec_equals_describe(name):
    spec = describe(create_model(name), default_resolution(name), name)
    assert load_shipped(name) == spec
    assert NetSpec.from_json(spec.to_json()) == spec
    n_density = sum(x.kind not in ("depthwise", "fc") for x in spec.layers)
    assert (len(spec.groups), n_density) == GENES[name]
    assert spec.layers[0].kind == "stem" and spec.layers[-1].kind == "fc"
    assert [g.id for g in spec.groups] == list(range(len(spec.groups)))
    for layer in spec.layers:
        if layer.kind == "depthwise":
            assert layer.group == layer.in_group and layer.groups == layer.in_ch
        if layer.kind != "fc":
            assert spec.groups[layer.group].channels == layer.out_ch
        if layer.in_group >= 0:
            assert spec.groups[layer.in_group].channels == layer.in_ch


@pytest.mark.parametrize("name", list_models())
def test_at_resolution_matches_trace(name):
    spec = load_shipped(name)
    for res in (33, 64) if spec.resolution == 224 else (40, 48):
        assert spec.at_resolution(res) == describe(create_model(name), res, name)


def test_resnet18_coupling():
    spec = load_shipped("resnet18")
    g0 = spec.groups[0]
    assert g0.members == ("conv1", "layer1.0.conv2", "layer1.1.conv2") and g0.residual and g0.strided
    down = spec.layer("layer2.0.downsample.0")
    assert down.kind == "pointwise" and down.group == spec.layer("layer2.1.conv2").group
    assert spec.layer("fc").in_group == spec.layer("layer4.1.conv2").group
    assert [o.kind for o in spec.ops].count("add") == 8
    assert spec.ops[0].kind == "maxpool" and (spec.ops[0].in_res, spec.ops[0].padding) == (112, 1)


def test_mobilenet_v2_coupling():
    spec = load_shipped("mobilenet_v2")
    # The 32-channel stage: three projections joined by two identity adds.
    g = spec.groups[spec.layer("features.4.conv.2").group]
    assert g.members == ("features.4.conv.2", "features.5.conv.2", "features.6.conv.2") and g.residual
    # The stem owns the first depthwise conv's channels.
    assert spec.groups[0].members == ("features.0.0", "features.1.conv.0.0")
    assert not spec.groups[spec.layer("features.17.conv.2").group].residual


def test_toy_union_find():
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.b = nn.Conv2d(8, 8, 3, padding=1, bias=False)
            self.c = nn.Conv2d(8, 8, 1)
            self.d = nn.Conv2d(8, 6, 3, stride=2, padding=1)
            self.e = nn.Conv2d(8, 6, 3, stride=2, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(6, 5)

        def forward(self, x):
            x = torch.relu(self.a(x))
            y = self.c(torch.relu(self.b(x))) + x
            y = self.d(y) + self.e(y)
            return self.fc(torch.flatten(self.pool(y), 1))

    t = trace(Toy(), 16, "toy")
    spec = t.spec
    assert [x.group for x in spec.layers] == [0, 1, 0, 2, 2, -1]
    assert [x.in_group for x in spec.layers] == [-1, 0, 1, 0, 0, 2]
    assert spec.groups[2].strided and spec.groups[2].residual and not spec.groups[1].residual
    assert [x.bias for x in spec.layers] == [True, False, True, True, True, True]
    assert t.norms == {}


def test_trace_records_the_activation_each_layer_and_add_feeds():
    class Acts(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.act6 = nn.ReLU6()
            self.b = nn.Conv2d(8, 8, 1)
            self.c = nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.d = nn.Conv2d(8, 8, 1)
            self.e = nn.Conv2d(8, 8, 1)
            self.f = nn.Conv2d(8, 8, 1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            x = self.act6(self.bn(self.a(x)))              # module ReLU6 after a BatchNorm
            y = nn.functional.relu(self.b(x))              # functional relu
            y = self.c(y).relu()                           # method relu
            y = self.d(y) + x                              # into an add: none; the add: none
            z = self.e(y)                                  # two readers: none
            z = torch.relu(self.f(z) + z) + z              # add then relu; the outer add: none
            return self.fc(torch.flatten(self.pool(z), 1))

    spec = describe(Acts(), 8, "acts")
    assert [x.act for x in spec.layers] == ["relu6", "relu", "relu", "none", "none", "none", "none"]
    assert [o.act for o in spec.ops if o.kind == "add"] == ["none", "relu", "none"]
    assert [o.act for o in spec.ops if o.kind != "add"] == ["none"]


def test_spec_json_without_activations_loads_as_profiled_before():
    d = load_shipped("resnet20").to_dict()
    for item in (*d["layers"], *d["ops"]):
        del item["act"]
    old = NetSpec.from_dict(d)
    assert all(x.act == "relu" for x in old.layers)
    assert [o.act for o in old.ops] == ["relu" if o.kind == "add" else "none" for o in old.ops]
    d["layers"][1]["act"] = "gelu"
    with pytest.raises(ValueError, match="act 'gelu' is not one of"):
        NetSpec.from_dict(d)


def test_unsupported_ops_are_named():
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            y = self.a(x)
            return self.fc(torch.cat([y, y], 1).mean((2, 3)))

    with pytest.raises(ValueError, match="unsupported operation.*cat"):
        describe(Cat(), 8)

    class NoPool(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, stride=2)
            self.fc = nn.Linear(4 * 9, 2)

        def forward(self, x):
            return self.fc(torch.flatten(self.a(x), 1))

    with pytest.raises(ValueError, match="globally pooled"):
        describe(NoPool(), 8)


def test_write_specs_roundtrip(tmp_path):
    paths = write_specs(tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"{n}.json" for n in list_models())
    assert NetSpec.from_json(paths[0].read_text()) == load_shipped(paths[0].stem)
    assert not list(tmp_path.glob(".*tmp"))


def test_at_resolution_too_small():
    with pytest.raises(ValueError, match="too small"):
        load_shipped("vgg16").at_resolution(16)
    with pytest.raises(ValueError, match="positive"):
        load_shipped("resnet18").at_resolution(0)
