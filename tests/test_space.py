"""SearchSpace: gene counts, JCW lower bounds, snapping, decode/encode, Arch JSON, MACs and params."""

import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest

from jcw.models import create_model, list_models
from jcw.core.space import BOUNDS_PRESETS, Arch, Bounds, SearchSpace, kept_channels, n_kept_blocks
from jcw.core.netspec import load_shipped

GENES = {"resnet18": (12, 20), "mobilenet_v1": (14, 14), "mobilenet_v2": (25, 35)}


@pytest.mark.parametrize("name", sorted(GENES))
def test_gene_counts(name):
    space = SearchSpace.for_model(name)
    assert (space.n_channel_genes, space.n_density_genes) == GENES[name]
    assert len(space.gene_names()) == space.n_genes == len(space.lower) == len(space.upper)


def test_channel_formula():
    assert kept_channels(64, 0.3).item() == 20  # ceil(16 * 0.3) = 5 blocks
    assert kept_channels(40, 0.7).item() == 28  # 10 * 0.7 = 7.000000000000001 must not become 8
    assert kept_channels(64, 0.0).item() == 4 and kept_channels(3, 0.1).item() == 3
    assert kept_channels(64, 1.0).item() == 64
    assert n_kept_blocks(10, 0.25).item() == 2 and n_kept_blocks(10, 0.35).item() == 4


def test_resnet18_bounds_follow_rules():
    space = SearchSpace.for_model("resnet18", bounds=BOUNDS_PRESETS["jcw"])
    spec = space.spec
    ch = dict(zip(space.channel_groups, space.lower[: space.n_channel_genes]))
    assert ch[0] == 0.9  # stem group: first (0.8), strided (0.6) and residual (0.9)
    assert ch[spec.layer("layer1.0.conv1").group] == 0.5
    assert ch[spec.layer("layer2.0.conv1").group] == 0.6
    assert ch[spec.layer("fc").in_group] == 0.9
    dens = dict(zip((spec.layers[i].name for i in space.density_layers), space.lower[space.n_channel_genes:]))
    assert dens["conv1"] == 0.8 and dens["layer1.0.conv1"] == 0.3
    assert dens["layer2.0.conv1"] == 0.8 and dens["layer4.1.conv2"] == 0.5
    custom = SearchSpace(spec, bounds=Bounds(channel=0.35, channel_residual=0.0, density_last=0.95))
    cl = dict(zip(custom.channel_groups, custom.lower))
    assert cl[spec.layer("layer1.0.conv1").group] == 0.4  # raised to the next grid point
    assert custom.lower[-1] == 1.0
    with pytest.raises(ValueError, match="outside"):
        Bounds(density=1.5)


def test_jcw_preset_is_jcws_resnet18_config_and_the_default_is_wider():
    jcw = BOUNDS_PRESETS["jcw"]
    assert (jcw.channel, jcw.channel_first, jcw.channel_last, jcw.channel_strided, jcw.channel_residual) == \
        (0.5, 0.8, 0.5, 0.6, 0.9)
    assert (jcw.density, jcw.density_first, jcw.density_last, jcw.density_strided) == (0.3, 0.8, 0.5, 0.8)
    default = BOUNDS_PRESETS["default"]
    assert default == Bounds()
    wide, narrow = SearchSpace.for_model("mobilenet_v2"), SearchSpace.for_model("mobilenet_v2", bounds=jcw)
    assert (wide.lower <= narrow.lower).all() and (wide.lower < narrow.lower).any()
    assert wide.macs(wide.minimal())[0] < narrow.macs(narrow.minimal())[0]
    # the stem and the classifier's input stay protected
    assert (default.channel_first, default.density_first, default.channel_last) == (0.8, 0.8, 0.5)


def test_mobilenet_v2_last_group_and_modes():
    space = SearchSpace.for_model("mobilenet_v2", mode="channel")
    assert np.all(space.lower[space.n_channel_genes:] == 1.0)
    weight = SearchSpace.for_model("mobilenet_v2", mode="weight")
    assert np.all(weight.lower[: weight.n_channel_genes] == 1.0)
    g = weight.snap(np.zeros(weight.n_genes))[0]
    out_ch, _, density = weight.decode_arrays(g)
    assert np.array_equal(out_ch[0], [x.out_ch for x in weight.spec.layers])
    assert density.min() == Bounds().density
    with pytest.raises(ValueError, match="mode"):
        SearchSpace.for_model("mobilenet_v2", mode="both")


def test_snap_clips_and_grids():
    space = SearchSpace.for_model("resnet20")
    rng = np.random.default_rng(0)
    g = space.snap(rng.uniform(-0.5, 1.5, (50, space.n_genes)))
    assert g.shape == (50, space.n_genes)
    assert np.all(g >= space.lower) and np.all(g <= space.upper)
    assert np.allclose(g * 10, np.round(g * 10))
    assert np.array_equal(space.snap(g), g)
    with pytest.raises(ValueError, match="shape"):
        space.snap(np.zeros(3))


@pytest.mark.parametrize("name", list_models())
def test_decode_encode_roundtrip(name):
    space = SearchSpace.for_model(name)
    rng = np.random.default_rng(1)
    genes = space.snap(rng.random((20, space.n_genes)))
    out_ch, in_ch, density = space.decode_arrays(genes)
    for n in range(len(genes)):
        arch = space.decode(genes[n])
        assert [c.out_ch for c in arch.layers] == out_ch[n].tolist()
        assert [c.in_ch for c in arch.layers] == in_ch[n].tolist()
        back = Arch.from_json(arch.to_json())
        assert back == arch
        assert space.decode(space.encode(back)) == arch
    spec = space.spec
    full = np.array([x.out_ch for x in spec.layers])
    assert np.all((out_ch % 4 == 0) | (out_ch == full))  # multiples of 4, or a group narrower than 4 / not of 4s
    assert np.all(out_ch[:, -1] == spec.num_classes) and np.all(density[:, -1] == 1)
    for i, x in enumerate(spec.layers):
        if x.kind == "depthwise":
            assert np.array_equal(out_ch[:, i], in_ch[:, i]) and np.all(density[:, i] == 1)


def test_encode_rejects_foreign_arch():
    space = SearchSpace.for_model("resnet20")
    arch = space.decode(space.full())
    arch.layers[1] = type(arch.layers[1])(arch.layers[1].name, 6, arch.layers[1].in_ch, 1.0)
    with pytest.raises(ValueError, match="layer1.0.conv1"):
        space.encode(arch)
    with pytest.raises(ValueError, match="does not match"):
        SearchSpace.for_model("resnet56").encode(space.decode(space.full()))
    with pytest.raises(ValueError, match="not an Arch"):
        Arch.from_dict({"model": "x"})


@pytest.mark.parametrize("name", list_models())
def test_full_params_match_model_and_macs_monotone(name):
    space = SearchSpace.for_model(name)
    model = create_model(name)
    assert space.params(space.full())[0] == sum(p.numel() for p in model.parameters())
    genes = np.stack([space.full(), space.uniform(0.8), space.uniform(0.8, 0.5), space.minimal()])
    macs, params = space.macs(genes), space.params(genes)
    assert np.all(np.diff(macs) < 0) and np.all(np.diff(params) < 0)


def test_macs_count_kept_weights_exactly():
    space = SearchSpace.for_model("vgg16")
    g = space.full()
    j = space.n_channel_genes + 1  # second conv: 64 -> 64, 3x3 at 32x32
    g[j] = 0.5
    layer = space.spec.layers[space.density_layers[1]]
    blocks = 64 // 4 * 64 * 9
    removed = (blocks - n_kept_blocks(blocks, 0.5)) * 4
    assert space.macs(space.full())[0] - space.macs(g)[0] == removed * layer.out_res ** 2
    assert space.params(space.full())[0] - space.params(g)[0] == removed


def test_other_resolution():
    space = SearchSpace.for_model("mobilenet_v2", resolution=96)
    assert space.spec.resolution == 96 and space.spec == load_shipped("mobilenet_v2").at_resolution(96)
    assert space.macs(space.full())[0] < SearchSpace.for_model("mobilenet_v2").macs(space.full())[0]


def test_cli_json_and_tables(capsys):
    from jcw.cli.space import main

    assert main(["--model", "mobilenet_v2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"model", "params", "macs", "channel_genes", "density_genes", "layers"} <= set(report)
    assert report["params"] == 3_504_872 and abs(report["macs"] / 0.30e9 - 1) < 0.02
    assert (len(report["channel_genes"]), len(report["density_genes"])) == (25, 35)
    layer = report["layers"][0]
    assert {k: layer[k] for k in ("name", "kind", "kernel", "stride", "in_res", "in_ch", "out_ch", "group")} == {
        "name": "features.0.0", "kind": "stem", "kernel": 3, "stride": 2, "in_res": 224, "in_ch": 3,
        "out_ch": 32, "group": 0}
    assert main(["--model", "resnet20", "--resolution", "64"]) == 0
    text = capsys.readouterr().out
    assert "resnet20 at 64x64" in text and "channel genes (12)" in text and "layer3.2.conv2" in text


def test_cli_lists_groups_genes_and_frozen_groups_with_their_reasons(capsys):
    from jcw.cli.space import main

    assert main(["--model", "mobilenet_v3_large"]) == 0
    text = capsys.readouterr().out
    assert "frozen groups (0): kept at full width, no gene" in text
    assert main(["--model", "mobilenet_v3_large", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frozen_groups"] == [] and len(report["channel_genes"]) == 30
    layers = {x["name"]: x for x in report["layers"]}
    # classifier = Linear(960, 1280), Hardswish, Dropout, Linear(1280, classes): the hidden 1280 are a gene
    hidden = next(g for g in report["channel_genes"] if g["members"] == ["classifier.0"])
    assert hidden["channels"] == 1280 and layers["classifier.3"]["in_group"] == hidden["group"]
    # the first SE block: its expand conv joins the group of the tensor it scales
    assert layers["features.4.block.2.fc2"]["group"] == layers["features.4.block.0.0"]["group"]

    # a user's model with a channel shuffle (a view jcw cannot follow): the shuffled group is frozen
    shuffle = Path(__file__).parent / "user_models" / "shuffle.py"
    assert main(["--model", f"{shuffle}:build", "--resolution", "32"]) == 0
    text = capsys.readouterr().out
    assert "frozen groups (1): kept at full width, no gene" in text
    assert "mix.0: read by .view() (changes the channel layout)" in text


def test_cli_usage_errors(capsys):
    from jcw.cli.space import main

    with pytest.raises(SystemExit) as e:
        main(["--model", "resnet1000"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "resnet1000" in err and "known models: " + ", ".join(list_models()) in err
    with pytest.raises(SystemExit) as e:
        main(["--model", "vgg16", "--resolution", "16"])
    assert e.value.code == 2 and "too small" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--model", "resnet18", "--resolution", "0"])
    assert e.value.code == 2 and "positive integer" in capsys.readouterr().err


def test_cli_runs_as_module_without_torch():
    code = ("import sys; sys.modules['torch'] = None; from jcw.cli.space import main; "
            "sys.exit(main(['--model', 'resnet18', '--json']))")
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["params"] == 11_689_512


def test_space_cli_json_reports_the_latency_range(capsys):
    from jcw.cli.space import main
    from latency.devicemodel import table_path
    from latency.lut import LatencyTable
    from latency.predictor import Predictor

    assert main(["--model", "mobilenet_v2", "--device", "a53", "--threads", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    spec = load_shipped("mobilenet_v2")
    table = LatencyTable.load(table_path("a53", 4))
    assert report["latency_full_ms"] == pytest.approx(Predictor(table, spec).full())
    assert report["latency_min_ms"] <= 0.3 * report["latency_full_ms"]
    assert main(["--model", "mobilenet_v2", "--device", "a53", "--bounds", "jcw", "--json"]) == 0
    jcw = json.loads(capsys.readouterr().out)
    assert jcw["latency_min_ms"] > report["latency_min_ms"] and jcw["latency_full_ms"] == report["latency_full_ms"]
