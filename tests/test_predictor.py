"""Predictor: per-layer + op + input cost sum, vectorised, validated against a per-entry loop."""

import time

import numpy as np
import pytest

from latency.devicemodel import table_path
from latency.lut import LatencyTable, space_channels, table_ops
from jcw.core.errors import UsageError
from jcw.core.netspec import load_shipped
from latency.predictor import Predictor


def random_arrays(spec, n, rng):
    """(N, L) out_ch, in_ch, density: random space channel counts per group and grid densities."""
    pick = {g.id: rng.choice(space_channels(g.channels), n) for g in spec.groups}
    out = np.stack([pick[x.group] if x.group >= 0 else np.full(n, x.out_ch) for x in spec.layers], 1)
    inn = np.stack([pick[x.in_group] if x.in_group >= 0 else np.full(n, x.in_ch) for x in spec.layers], 1)
    fixed = np.array([x.kind in ("depthwise", "fc") for x in spec.layers])
    dens = np.where(fixed, 1.0, rng.uniform(0.0, 1.0, (n, len(spec.layers))))
    return out, inn, dens


@pytest.fixture(scope="module")
def table():
    return LatencyTable.load(table_path("a72", 1))


@pytest.mark.parametrize("model", ["mobilenet_v2", "resnet18", "vgg16"])
def test_predict_equals_sum_of_entries(table, model):
    spec = load_shipped(model)
    pred = Predictor(table, spec)
    rng = np.random.default_rng(7)
    out, inn, dens = random_arrays(spec, 50, rng)
    got = pred.predict(out, inn, dens)
    for n in range(0, 50, 7):
        want = 0.0
        for j, layer in enumerate(spec.layers):
            e = table.layer(layer)
            want += e.interpolate([out[n, j]], [inn[n, j]], [dens[n, j]])[0]
        for op in table_ops(spec):
            ch = op.channels if op.kind == "input" else out[n, next(j for j, x in enumerate(spec.layers) if x.group == op.group)]
            want += table.op(op).interpolate([ch])[0]
        assert got[n] == pytest.approx(want, rel=1e-12)
    costs = pred.layer_costs(out, inn, dens)
    assert costs.shape == (50, len(spec.layers) + len(spec.ops) + 1) and (costs > 0).all()


def test_pruning_lowers_latency_and_full_is_largest(table):
    spec = load_shipped("mobilenet_v2")
    pred = Predictor(table, spec)
    out, inn, dens = random_arrays(spec, 200, np.random.default_rng(8))
    assert (pred.predict(out, inn, dens) < pred.full()).all()
    thinner = pred.predict(out, inn, dens * 0.5)
    assert (thinner <= pred.predict(out, inn, dens) + 1e-12).all()


def test_bad_shapes_and_off_axis(table):
    spec = load_shipped("resnet18")
    pred = Predictor(table, spec)
    out, inn, dens = random_arrays(spec, 3, np.random.default_rng(9))
    with pytest.raises(ValueError, match=r"expected \(N, 21\)"):
        pred.predict(out[:, :5], inn, dens)
    out[2, 4] = 999
    with pytest.raises(UsageError, match=r"layer 'layer1.1.conv2' \(regular k3 s1 @56 64->64\): out_ch 999 \(candidate 2\)"):
        pred.predict(out, inn, dens)


def test_uncovered_model_names_the_layer(table):
    spec = load_shipped("resnet18").at_resolution(160)
    with pytest.raises(UsageError, match=r"does not cover resnet18 at 160: no entry for layer 'conv1'"):
        Predictor(table, spec)


@pytest.mark.perf
def test_throughput_mobilenet_v2(table):
    spec = load_shipped("mobilenet_v2")
    pred = Predictor(table, spec)
    out, inn, dens = random_arrays(spec, 20000, np.random.default_rng(10))
    pred.predict(out, inn, dens)
    best = min(_cpu_seconds(lambda: pred.predict(out, inn, dens)) for _ in range(3))
    assert 20000 / best >= 50000, f"{20000 / best:.0f} archs/s"


def _cpu_seconds(fn):
    t = time.process_time()
    fn()
    return time.process_time() - t


def _brute_force(table, space, genes):
    """Latency of each genome by a plain loop over the spec: every layer's entry at its decoded
    (out_ch, in_ch, density), every op's at the sum of its parts' kept channels (full for group -1)."""
    out, inn, dens = space.decode_arrays(genes)
    kept = space.group_channels(genes)
    spec = space.spec
    total = np.zeros(len(genes))
    for n in range(len(genes)):
        for j, layer in enumerate(spec.layers):
            total[n] += table.layer(layer).interpolate([out[n, j]], [inn[n, j]], [dens[n, j]])[0]
        for op in table_ops(spec):
            parts = getattr(op, "channel_parts", ((op.group, op.channels),))
            ch = sum(c if g < 0 else kept[n, g] for g, c in parts)
            total[n] += table.op(op).interpolate([ch])[0]
    return total


@pytest.mark.parametrize("which", ["blocks", "fixed", "mobilenet_v3_small", "efficientnet_b0"])
def test_predict_equals_brute_force_on_concat_se_and_fixed_channels(which, blocks_spec, fixed_spec):
    """Concatenations (an op's channels and a reader's in_ch summed over parts), squeeze-excitation, group -1
    layers, a frozen hidden linear, act ops: the vectorised predictor equals a per-entry loop at random
    archs of the search space."""
    from jcw.core.space import SearchSpace
    from latency.devicemodel import build_table

    if which in ("blocks", "fixed"):
        spec = blocks_spec if which == "blocks" else fixed_spec
        table = build_table("a72", 1, models=(), specs=[spec])
    else:
        spec = load_shipped(which).at_resolution(96)
        table = build_table("a53", 4, models=(), specs=[spec])
    space = SearchSpace(spec)
    genes = np.concatenate([space.random(30, np.random.default_rng(3)), space.minimal()[None], space.full()[None]])
    pred = Predictor(table, spec)
    got = pred.predict(*space.decode_arrays(genes))
    np.testing.assert_allclose(got, _brute_force(table, space, genes), rtol=1e-12)
    assert got[-1] == pytest.approx(pred.full(), rel=1e-12) and (got[:-1] <= got[-1] + 1e-12).all()
    assert got[-2] == pytest.approx(got.min())
    # predict_arch prices hidden linears at their decoded width, the classifier at the spec's classes
    assert pred.predict_arch(space.decode(genes[0])) == pytest.approx(got[0], rel=1e-12)


def test_op_channels_sum_the_parts(fixed_spec):
    """The concat of a pruned branch (20) and fixed channels (16) and the GELU after it take kept + 16."""
    from jcw.core.space import SearchSpace
    from latency.devicemodel import build_table

    spec = fixed_spec
    table = build_table("a53", 1, models=(), specs=[spec])
    pred = Predictor(table, spec)
    space = SearchSpace(spec)
    genes = space.uniform(0.2)
    out, inn, dens = space.decode_arrays(genes)
    costs = pred.layer_costs(out, inn, dens)[0]
    branch = space.group_channels(genes)[0, 1]
    assert branch < 20
    for k, op in enumerate(spec.ops):
        if op.kind in ("concat", "act"):
            want = table.op(op).interpolate([branch + 16])[0]
            assert costs[len(spec.layers) + k] == pytest.approx(want, rel=1e-12), op.kind
    mix = [x.name for x in spec.layers].index("mix.0")
    assert inn[0, mix] == branch + 16
