"""Layer description: fx-derived coupling groups, shipped specs, NetSpec JSON and resolution changes."""

import pytest
import torch
from torch import nn

from pathlib import Path

from jcw.core.errors import UsageError
from jcw.core.space import SearchSpace
from jcw.layers import describe, describe_model, trace, write_specs
from jcw.models import create_model, default_resolution, list_models
from jcw.core.netspec import NetSpec, load_shipped

# (coupling groups, density genes), counted from the architectures' block tables:
# resnet50: stem + 2 inner groups x 16 bottlenecks + 4 residual stages; 1 + 16 * 3 + 4 downsample convs.
# mobilenet_v3_large: stem (joined by block 1's add) + 14 expansions + 8 SE squeezes + 5 residual stages +
#   the last conv + the hidden linear; stem + 14 + 2 * 8 SE convs + 15 projections + the last conv.
# mobilenet_v3_small: stem + block 1's SE squeeze and projection + 10 expansions + 8 SE squeezes + 4 residual
#   stages + last conv + hidden linear; stem + 2 * 9 SE convs + 10 + 11 projections + the last conv.
# efficientnet_b0: stem + 16 SE squeezes + 15 expansions + 7 stages + the last conv; 1 + 32 + 15 + 16 + 1.
GENES = {"resnet18": (12, 20), "mobilenet_v1": (14, 14), "mobilenet_v2": (25, 35),
         "resnet20": (12, 21), "resnet56": (30, 57), "vgg16": (13, 13), "resnet50": (37, 53),
         "mobilenet_v3_large": (30, 47), "mobilenet_v3_small": (27, 41), "efficientnet_b0": (40, 65)}


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
    d["layers"][1]["act"] = "swish"
    with pytest.raises(ValueError, match="act 'swish' is not one of"):
        NetSpec.from_dict(d)


def test_ops_jcw_cannot_follow_freeze_the_channels_they_touch():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.b = nn.Conv2d(8, 8, 3, padding=1)
            self.c = nn.Conv2d(8, 8, 1)
            self.bn = nn.BatchNorm2d(8)
            self.d = nn.Conv2d(8, 4, 3, stride=2)
            self.fc = nn.Linear(4 * 9, 2)

        def forward(self, x):
            y = torch.roll(self.a(x), 1, dims=1)        # channel shuffle: a's group frozen, y never pruned
            w = self.b(y)
            z = self.bn(self.c(w) + w)                  # a BatchNorm after an add: the add's group frozen
            return self.fc(torch.flatten(self.d(z), 1))  # a 3x3 map flattened into the fc: d frozen

    spec = describe(Odd(), 8)
    frozen = {g.members: g.frozen for g in spec.groups if g.frozen}
    assert set(frozen) == {("a",), ("b", "c"), ("d",)}
    assert "roll" in frozen[("a",)] and "BatchNorm bn" in frozen[("b", "c")] and "flatten" in frozen[("d",)]
    assert spec.layer("b").in_group == -1 and spec.layer("fc").in_group == -1
    assert SearchSpace(spec).n_channel_genes == 0


def test_untraceable_and_unrepresentable_models_are_named():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            y = self.a(x)
            if y.sum() > 0:  # data-dependent control flow
                y = -y
            return self.fc(y.mean((2, 3)))

    with pytest.raises(UsageError, match="Branchy cannot be traced by torch.fx"):
        describe_model(Branchy(), 8)


    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.b = nn.Conv2d(4, 4, 3, padding=1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.b(self.b(self.a(x))).mean((2, 3)))

    with pytest.raises(UsageError, match="layer 'b' is called 2 times"):
        describe_model(Shared(), 8)


def test_grouped_convs_keep_their_groups_whole(randomize):
    class NeXt(nn.Module):  # a ResNeXt bottleneck: 1x1, grouped 3x3 (4 groups), 1x1, residual add
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, padding=1)
            self.reduce = nn.Conv2d(16, 16, 1)
            self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
            self.expand = nn.Conv2d(16, 16, 1)
            self.head = nn.Conv2d(16, 24, 1)
            self.fc = nn.Linear(24, 5)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            y = self.expand(torch.relu(self.grouped(torch.relu(self.reduce(x)))))
            return self.fc(self.head(torch.relu(x + y)).mean((2, 3)))

    model = randomize(NeXt()).eval()
    spec = describe(model, 8, "next")
    g = spec.layer("grouped")
    assert (g.kind, g.groups) == ("regular", 4)
    frozen = {grp.members: grp.frozen for grp in spec.groups if grp.frozen}
    reason = "grouped conv grouped (groups=4) keeps its groups whole"
    assert frozen == {("reduce",): reason, ("grouped",): reason}
    space = SearchSpace(spec)
    assert "density:grouped" not in space.gene_names() and space.gene_names()[:2] == ["channel:g0", "channel:g3"]
    assert [spec.groups[i].members for i in space.channel_groups] == [("stem", "expand"), ("head",)]
    assert space.params(space.full())[0] == sum(p.numel() for n, p in model.named_parameters() if "weight" in n or
                                                "bias" in n)
    # materialize and the supernet keep the grouped conv whole and agree with each other
    from jcw.prune.materialize import materialize, order_channels
    from jcw.search.supernet import Supernet
    genes = space.minimal()
    small, masks = materialize(model, space.decode(genes), spec=spec)
    assert small.grouped.groups == 4 and small.grouped.weight.shape == model.grouped.weight.shape
    order_channels(model, spec, "l1")
    net = Supernet(model, spec).eval()
    out_ch, _, density = space.decode_arrays(genes)
    net.set_candidates(out_ch, density)
    net.select(0)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(net(x), small.eval()(x), rtol=1e-4, atol=1e-5)


def test_concat_couples_nothing_and_its_readers_list_the_parts():
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.b = nn.Conv2d(8, 4, 1)
            self.c = nn.Conv2d(8, 12, 3, padding=1)
            self.d = nn.Conv2d(16, 16, 1)
            self.e = nn.Conv2d(24, 16, 1)
            self.fc = nn.Linear(16 + 8, 3)

        def forward(self, x):
            a = torch.relu(self.a(x))
            cat = torch.cat([self.b(a), self.c(a)], dim=1)
            y = self.d(cat) + self.e(torch.cat((a, cat), 1))  # a concat of a concat; an add of two convs
            return self.fc(torch.cat([y.mean((2, 3)), nn.functional.adaptive_avg_pool2d(a, 1).flatten(1)], 1))

    spec = describe(Cat(), 8, "cat")
    ga, gb, gc, gd = (spec.layer(n).group for n in "abcd")
    assert len({ga, gb, gc, gd}) == 4 and spec.layer("e").group == gd and spec.groups[gd].residual
    assert spec.layer("d").in_parts == ((gb, 4), (gc, 12))
    assert spec.layer("e").in_parts == ((ga, 8), (gb, 4), (gc, 12))
    assert spec.layer("fc").in_parts == ((gd, 16), (ga, 8))
    concats = [o for o in spec.ops if o.kind == "concat"]
    assert [o.parts for o in concats] == [((gb, 4), (gc, 12)), ((ga, 8), (gb, 4), (gc, 12)), ((gd, 16), (ga, 8))]
    assert not any(g.frozen for g in spec.groups)
    assert NetSpec.from_json(spec.to_json()) == spec
    space = SearchSpace(spec)
    out_ch, in_ch, _ = space.decode_arrays(space.uniform(0.5))
    # the kept part of each group: a (the stem's, bound 0.8) ceil(8/4 * 0.8) * 4, b 4, c ceil(12/4 * 0.5) * 4
    assert in_ch[0, [x.name for x in spec.layers].index("e")] == 8 + 4 + 8


def test_squeeze_excitation_couples_the_gate_to_the_scaled_tensor():
    import sys
    sys.path.insert(0, str(Path(__file__).parent / "user_models"))
    from blocks import build

    spec = describe(build(), 32, "blocks")
    se_fc2, expand = spec.layer("block.se.fc2"), spec.layer("block.expand.0")
    assert se_fc2.group == expand.group == spec.layer("block.depthwise.0").group
    assert not spec.groups[expand.group].residual  # a gate is no residual add
    se_fc1 = spec.layer("block.se.fc1")
    assert se_fc1.in_group == expand.group and se_fc1.group not in (expand.group, se_fc2.in_group - 1) \
        and se_fc2.in_group == se_fc1.group and se_fc1.in_res == 1
    assert [(x.name, x.act) for x in spec.layers if x.act not in ("none",)] == [
        ("stem.0", "hardswish"), ("fire.left.0", "hardswish"), ("fire.right.0", "hardswish"),
        ("block.expand.0", "silu"), ("block.depthwise.0", "silu"), ("block.se.fc1", "relu"),
        ("block.se.fc2", "hardsigmoid"), ("head.0", "hardswish")]
    kinds = [(o.kind, o.in_res, o.channels, o.kernel) for o in spec.ops]
    assert kinds == [("concat", 16, 24, 0), ("avgpool", 16, 48, 0), ("mul", 16, 48, 0), ("add", 16, 24, 0),
                     ("avgpool", 16, 24, 2), ("avgpool", 8, 64, 0)]
    assert spec.at_resolution(64) == describe(build(), 64, "blocks")


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
