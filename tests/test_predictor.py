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
