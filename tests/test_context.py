"""latency.context: the covering design, the colouring, and whole networks rebuilt from NetSpecs."""

import itertools

import numpy as np
import pytest

from jcw.engine import Engine
from latency.context import COLOURS, Run, build, colour_groups, design, kept, pair_covering
from jcw.core.errors import UsageError
from latency.lut import QUICK_DENSITIES, QUICK_RATIOS, layer_axes
from jcw.core.netspec import load_shipped

ZOO = ("resnet18", "mobilenet_v1", "mobilenet_v2", "resnet20", "resnet56", "vgg16")


@pytest.mark.parametrize("levels,factors", [(6, 2), (6, 3), (5, 6), (6, 6), (11, 6), (4, 9), (1, 3)])
def test_pair_covering_meets_every_pair_of_levels_in_every_pair_of_factors(levels, factors):
    rows = pair_covering(levels, factors)
    assert rows.shape[1] == factors and rows.min() >= 0 and rows.max() < levels
    for a, b in itertools.combinations(range(factors), 2):
        assert set(zip(rows[:, a], rows[:, b])) == set(itertools.product(range(levels), repeat=2)), (a, b)


@pytest.mark.parametrize("model", ZOO)
def test_colouring_separates_each_layers_input_and_output_groups(model):
    spec = load_shipped(model)
    colour = colour_groups(spec, COLOURS)
    assert set(colour) == {g.id for g in spec.groups}
    for x in spec.layers:
        if x.group >= 0 and x.in_group >= 0 and x.group != x.in_group:
            assert colour[x.group] != colour[x.in_group], x.name
    assert len(set(colour.values())) == min(COLOURS, len(spec.groups))


def test_design_puts_every_layer_at_every_point_of_its_grid():
    spec = load_shipped("resnet20")
    runs = design(spec, QUICK_RATIOS, QUICK_DENSITIES)
    for li, x in enumerate(spec.layers):
        axes = layer_axes(x, quick=True)
        want = set(itertools.product(axes["out_ch"], axes["in_ch"] or [None], axes["density"] or [None]))
        got = set()
        for run in runs:
            out = x.out_ch if x.kind == "fc" else run.channels[x.group]
            inn = None if x.kind == "depthwise" else (x.in_ch if x.in_group < 0 else run.channels[x.in_group])
            got.add((out, inn, None if axes["density"] is None else run.density[li]))
        assert got == want, x.name
    # neighbours vary: a run is not one uniform width
    assert np.mean([len(set(r.channels.values())) > 2 for r in runs]) > 0.5


def _adds(model):
    """{add node: names of the Conv nodes feeding it (through one Relu)} of an ONNX graph."""
    made = {o: n for n in model.graph.node for o in n.output}

    def conv_of(t):
        n = made.get(t)
        while n is not None and n.op_type != "Conv":
            n = made.get(n.input[0]) if n.op_type == "Relu" else None
        return n.name if n is not None else None

    return {n.name: {conv_of(t) for t in n.input} for n in model.graph.node if n.op_type == "Add"}


@pytest.mark.parametrize("model", ZOO)
def test_full_width_network_has_the_models_layers_and_residual_blocks(model):
    spec = load_shipped(model)
    full = Run.full_width(spec)
    onnx_model, place = build(spec, full, np.random.default_rng(0))
    convs = [n for n in onnx_model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert [n.name for n in convs] == [x.name for x in spec.layers]
    assert len(place.adds) == sum(o.kind == "add" for o in spec.ops)
    assert sorted(place.pools) == [i for i, o in enumerate(spec.ops) if o.kind != "add"]
    engine = Engine(onnx_model)
    assert engine.output_shape == (spec.num_classes,)
    for p, x in zip([p for p in engine.plan if p.op in ("conv", "depthwise", "linear")], spec.layers):
        if x.kind != "fc":
            assert p.shape == (x.out_ch, x.out_res, x.out_res), x.name
    adds = set(map(frozenset, _adds(onnx_model).values()))
    if model == "resnet18":
        assert frozenset({"layer1.0.conv2", None}) in adds               # identity block: conv2 + the pooled stem
        assert frozenset({"layer2.0.conv2", "layer2.0.downsample.0"}) in adds
        assert frozenset({"layer2.1.conv2", None}) in adds               # + the previous block's sum
    if model == "mobilenet_v2":
        assert frozenset({"features.3.conv.2", "features.2.conv.2"}) in adds
        assert frozenset({"features.5.conv.2", "features.4.conv.2"}) in adds
        assert not any("features.3.conv.2" in a and "features.4.conv.2" in a for a in adds)   # stride 2: none


def test_pruned_network_runs_with_finite_outputs_and_kept_shapes():
    spec = load_shipped("mobilenet_v2").at_resolution(64)
    run = design(spec, QUICK_RATIOS, QUICK_DENSITIES)[57]
    onnx_model, place = build(spec, run, np.random.default_rng(3))
    engine = Engine(onnx_model)
    y = engine.run(np.random.default_rng(4).standard_normal((1, 3, 64, 64), dtype=np.float32))
    assert np.isfinite(y).all() and y.std() > 0
    for li, (name, out_ch, in_ch, density) in place.layers.items():
        x = spec.layers[li]
        if x.kind not in ("fc", "depthwise"):
            assert out_ch == run.channels[x.group] and density == run.density[li]
            assert out_ch in (kept(x.out_ch, r) for r in QUICK_RATIOS)


def test_a_spec_whose_graph_cannot_be_rebuilt_is_refused():
    from dataclasses import replace

    spec = load_shipped("resnet20")
    broken = replace(spec, layers=spec.layers[:-1])          # no fc: the pools and adds are left over
    full = Run.full_width(spec)
    with pytest.raises(UsageError, match="no fc layer"):
        build(broken, full, np.random.default_rng(0))


@pytest.mark.parametrize("model", ["mobilenet_v2", "resnet18"])
def test_full_width_network_runs_the_real_models_steps(model, tmp_path):
    """The engine plans the context network with the same fused activations and residual adds, step
    by step, as the zoo model exported by torch (ReLU6, linear bottlenecks, add-then-ReLU)."""
    from jcw.export import export_onnx
    from jcw.models import create_model

    res = 64
    spec = load_shipped(model).at_resolution(res)
    full = Run.full_width(spec)
    context = Engine(build(spec, full, np.random.default_rng(0))[0])
    real = Engine(str(export_onnx(create_model(model), tmp_path / "m.onnx", res)))

    def steps(engine):
        return [(p.op, p.shape, p.act, p.residual) for p in engine.plan
                if p.op in ("conv", "depthwise", "linear")]

    got, want = steps(context), steps(real)
    assert len(got) == len(spec.layers)
    assert got == want
    assert {s[2] for s in want} == ({"none", "relu6"} if model == "mobilenet_v2" else {"none", "relu"})


NEW = ("resnet50", "mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0")


def _spec(which, blocks_spec, fixed_spec):
    if which == "blocks":
        return blocks_spec
    if which == "fixed":
        return fixed_spec
    spec = load_shipped(which)
    return spec.at_resolution(64) if spec.resolution > 64 else spec


def _ort(model, spec, seed=0):
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(seed).standard_normal((1, spec.layers[0].in_ch, spec.resolution, spec.resolution),
                                                   dtype=np.float32)
    return sess.run(None, {"x": x})[0]


@pytest.mark.parametrize("which", ["blocks", "fixed", *NEW])
def test_context_networks_of_new_ops_are_valid_onnx_that_onnxruntime_runs(which, blocks_spec, fixed_spec):
    """Full-width and pruned context networks of specs with concat, SE, hardswish, SiLU, GELU, leaky ReLU,
    windowed average pools, hidden linears and group -1 layers: valid ONNX, run by onnxruntime with finite
    outputs; every layer and op of the spec placed, at the kept widths of the run."""
    spec = _spec(which, blocks_spec, fixed_spec)
    runs = design(spec, QUICK_RATIOS, QUICK_DENSITIES)
    for run in (Run.full_width(spec), runs[11], runs[-1]):
        model, place = build(spec, run, np.random.default_rng(5))
        y = _ort(model, spec)
        assert y.shape == (1, spec.num_classes) and np.isfinite(y).all()
        assert sorted(place.layers) == list(range(len(spec.layers)))
        assert sorted([*place.pools, *place.adds]) == list(range(len(spec.ops)))
        names = {n.name for n in model.graph.node}
        assert all(name in names for steps in place.pools.values() for name in steps)
        for i, op in enumerate(spec.ops):
            if i in place.op_channels:
                want = sum(c if g < 0 else run.channels[g] for g, c in op.channel_parts)
                assert place.op_channels[i] == want, (i, op.kind)
        for li, (name, out_ch, in_ch, density) in place.layers.items():
            x = spec.layers[li]
            assert in_ch == sum(c if g < 0 else run.channels[g] for g, c in x.input_parts), x.name
            assert out_ch == (in_ch if x.kind == "depthwise" else x.out_ch if x.group < 0 else run.channels[x.group])
    types = {n.op_type for n in model.graph.node}
    want = {"blocks": {"Concat", "Mul", "HardSwish", "HardSigmoid", "Sigmoid", "AveragePool", "GlobalAveragePool"},
            "fixed": {"Concat", "Gelu", "LeakyRelu", "Clip", "Mul", "Sigmoid"},
            "mobilenet_v3_large": {"HardSwish", "HardSigmoid", "Mul", "Add"},
            "mobilenet_v3_small": {"HardSwish", "HardSigmoid", "Mul", "Add"},
            "efficientnet_b0": {"Sigmoid", "Mul", "Add"}, "resnet50": {"MaxPool", "Add", "Relu"}}[which]
    assert want <= types


def test_squeeze_excitation_and_concat_are_wired_as_in_the_model(blocks_spec):
    """blocks.py: the SE gate (fc2 + hardsigmoid) scales the depthwise output that feeds project, the fire
    branches are concatenated for mix, project closes the residual block, the head reads the 2x2 pool."""
    model, place = build(blocks_spec, Run.full_width(blocks_spec), np.random.default_rng(0))
    made = {o: n for n in model.graph.node for o in n.output}
    node = {n.name: n for n in model.graph.node}

    def source(t, skip=("Relu", "HardSwish", "HardSigmoid", "Sigmoid", "Clip")):
        n = made[t]
        while n.op_type in skip or (n.op_type == "Mul" and n.input[1] == f"{n.input[0]}.sigmoid"):
            n = made[n.input[0]]
        return n

    mix = node["fire.mix.0"]
    cat = made[mix.input[0]]
    assert cat.op_type == "Concat" and [source(t).name for t in cat.input] == ["fire.left.0", "fire.right.0"]
    project = node["block.project.0"]
    mul = made[project.input[0]]
    assert mul.op_type == "Mul" and source(mul.input[0]).name == "block.depthwise.0"
    gate = made[mul.input[1]]
    assert gate.op_type == "HardSigmoid" and made[gate.input[0]].name == "block.se.fc2"
    fc1 = node["block.se.fc1"]
    assert made[fc1.input[0]].op_type == "GlobalAveragePool"
    assert source(made[fc1.input[0]].input[0]).name == "block.depthwise.0"
    add = next(n for n in model.graph.node if n.op_type == "Add")
    assert {source(t).name for t in add.input} == {"block.project.0", "fire.mix.0"}
    head = node["head.0"]
    assert made[head.input[0]].op_type == "AveragePool"
    assert made[head.input[0]].input[0] == add.output[0]


def test_design_separates_concatenated_parts_and_keeps_frozen_groups_full(fixed_spec, blocks_spec):
    colour = colour_groups(blocks_spec, COLOURS)
    assert colour[1] != colour[2]                          # fire.left and fire.right vary independently
    frozen = [g.id for g in fixed_spec.groups if g.frozen]
    assert frozen
    for run in design(fixed_spec, QUICK_RATIOS, QUICK_DENSITIES):
        assert all(run.channels[g] == fixed_spec.groups[g].channels for g in frozen)
    # every design point of every layer lies on its grid (what profile-latency indexes)
    for spec in (fixed_spec, blocks_spec):
        for run in design(spec, QUICK_RATIOS, QUICK_DENSITIES)[:60]:
            for li, x in enumerate(spec.layers):
                axes = layer_axes(x, quick=True)
                out = x.out_ch if x.group < 0 else run.channels[x.group]
                inn = sum(c if g < 0 else run.channels[g] for g, c in x.input_parts)
                assert out in axes["out_ch"] and (axes["in_ch"] is None or inn in axes["in_ch"]), x.name


def _engine_runs(model):
    """The engine, or a skip while it lacks an op of the context network (the engine branch adds them)."""
    from jcw.engine import SUPPORTED_OPS

    missing = sorted({n.op_type for n in model.graph.node} - set(SUPPORTED_OPS))
    if missing:
        pytest.skip(f"the engine does not run {', '.join(missing)} yet")
    return Engine(model)


@pytest.mark.parametrize("which", ["blocks", "mobilenet_v3_small", "efficientnet_b0"])
def test_engine_runs_new_context_networks_like_onnxruntime(which, blocks_spec, fixed_spec):
    spec = _spec(which, blocks_spec, fixed_spec)
    run = design(spec, QUICK_RATIOS, QUICK_DENSITIES)[23]
    model, place = build(spec, run, np.random.default_rng(2))
    engine = _engine_runs(model)
    x = np.random.default_rng(0).standard_normal((1, 3, spec.resolution, spec.resolution), dtype=np.float32)
    want = _ort(model, spec)
    np.testing.assert_allclose(engine.run(x), want, rtol=1e-3, atol=1e-3 * float(np.abs(want).max()))
    steps = {p.name for p in engine.plan}
    assert all(x.name in steps for x in spec.layers)


@pytest.mark.parametrize("model", ["mobilenet_v3_small", "efficientnet_b0", "resnet50"])
def test_full_width_network_runs_the_new_models_steps(model, tmp_path):
    """As test_full_width_network_runs_the_real_models_steps, for the new zoo models (SE, hardswish,
    SiLU, 5x5 depthwise, bottlenecks): skipped while the engine lacks their ops."""
    from jcw.export import export_onnx
    from jcw.models import create_model

    res = 64
    spec = load_shipped(model).at_resolution(res)
    context = _engine_runs(build(spec, Run.full_width(spec), np.random.default_rng(0))[0])
    real = Engine(str(export_onnx(create_model(model), tmp_path / "m.onnx", res)))

    def steps(engine):
        return [(p.op, p.shape, p.act, p.residual) for p in engine.plan if p.op not in ("reshape",)]

    assert steps(context) == steps(real)
