"""LatencyTable: schema round trip, validation messages, trilinear interpolation."""

import json

import numpy as np
import pytest

from latency.lut import Entry, LatencyTable, layer_axes, space_channels
from jcw.core.errors import UsageError
from jcw.core.netspec import LayerSpec, NetSpec, OpSpec, GroupSpec


def _layer(name="conv", kind="pointwise", in_ch=32, out_ch=64):
    return LayerSpec(name=name, kind=kind, kernel=1, stride=1, padding=0, groups=1, in_res=8,
                     in_ch=in_ch, out_ch=out_ch, group=1, in_group=0)


def _table(rng, layer=None):
    layer = layer or _layer()
    axes = {"out_ch": [8, 24, 64], "in_ch": [4, 16, 32], "density": [0.0, 0.5, 1.0]}
    mean = rng.uniform(0.1, 2.0, (3, 3, 3))
    entry = Entry.build(layer.signature, axes, mean, rng.uniform(0, 0.1, (3, 3, 3)), np.full((3, 3, 3), 7))
    op = OpSpec(kind="add", in_res=8, channels=64, group=1)
    op_entry = Entry.build(("add", 0, 0, 0, 8, 64), {"out_ch": [8, 64]}, [0.01, 0.05])
    in_entry = Entry.build(("input", 0, 0, 0, 8, 32), {"out_ch": [32]}, [0.003])
    prov = {"kind": "measured", "cpu": "test"}
    ops = {op_entry.key: op_entry, in_entry.key: in_entry}
    return LatencyTable("host", 1, prov, {entry.key: entry}, ops, ["toy@8"]), layer, op


def _reference_trilinear(axes, mean, o, i, d):
    def bracket(ax, x):
        j = min(max(np.searchsorted(ax, x, side="right") - 1, 0), len(ax) - 2)
        return j, (x - ax[j]) / (ax[j + 1] - ax[j])

    (a, ta), (b, tb), (c, tc) = bracket(axes[0], o), bracket(axes[1], i), bracket(axes[2], d)
    total = 0.0
    for da, wa in ((0, 1 - ta), (1, ta)):
        for db, wb in ((0, 1 - tb), (1, tb)):
            for dc, wc in ((0, 1 - tc), (1, tc)):
                total += wa * wb * wc * mean[a + da, b + db, c + dc]
    return total


def test_round_trip_is_exact_and_deterministic(tmp_path):
    rng = np.random.default_rng(1)
    table, layer, _ = _table(rng)
    path = table.save(tmp_path / "t.json")
    again = LatencyTable.load(path)
    assert again.to_json() == table.to_json()
    e = again.layer(layer)
    assert e.count.min() == 7 and np.allclose(e.mean, table.layer(layer).mean, rtol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]


def test_interpolation_matches_reference_and_grid_points():
    rng = np.random.default_rng(2)
    table, layer, _ = _table(rng)
    e = table.layer(layer)
    axes = [e.axes["out_ch"], e.axes["in_ch"], e.axes["density"]]
    o = rng.integers(8, 65, 200)
    i = rng.integers(4, 33, 200)
    d = rng.uniform(0, 1, 200)
    got = e.interpolate(o, i, d)
    want = [_reference_trilinear(axes, e.mean, *q) for q in zip(o, i, d)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    grid = np.array(np.meshgrid(*axes, indexing="ij")).reshape(3, -1)
    np.testing.assert_allclose(e.interpolate(*grid), e.mean.ravel(), rtol=1e-12)


def test_trilinear_is_exact_for_multilinear_costs():
    axes = {"out_ch": [4, 20, 52, 100], "in_ch": [3, 30, 90], "density": [0.0, 0.3, 1.0]}
    o, i, d = np.meshgrid(axes["out_ch"], axes["in_ch"], axes["density"], indexing="ij")
    f = lambda o, i, d: 0.01 + 2e-4 * o * i * (0.2 + d) + 1e-3 * o
    e = Entry.build(("pointwise", 1, 1, 8, 90, 100), axes, f(o, i, d))
    rng = np.random.default_rng(3)
    q = rng.integers(4, 101, 500), rng.integers(3, 91, 500), rng.uniform(0, 1, 500)
    np.testing.assert_allclose(e.interpolate(*q), f(*q), rtol=1e-10)


def test_space_channels_match_the_space_formula():
    assert space_channels(64) == [4, 8, 16, 20, 28, 32, 40, 48, 52, 60, 64]
    assert space_channels(3) == [3]
    axes = layer_axes(_layer(kind="stem", in_ch=3))
    assert axes["in_ch"] == [3] and axes["density"][0] == 0.0 and axes["out_ch"][0] == 4
    dw = layer_axes(LayerSpec("dw", "depthwise", 3, 1, 1, 64, 8, 64, 64, 1, 1))
    assert dw["in_ch"] is None and dw["density"] is None


def _dump(table):
    return json.loads(table.to_json())


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(version=2), "unsupported schema version 2"),
    (lambda d: d.update(format="other"), "'format' must be"),
    (lambda d: d.pop("layers"), "missing field 'layers'"),
    (lambda d: d["provenance"].update(kind="guessed"), "provenance.kind"),
    (lambda d: d["layers"][0]["mean"][0][0].__setitem__(0, float("nan")), "NaN"),
    (lambda d: d["layers"][0]["std"][1][1].__setitem__(1, -0.5), "negative"),
    (lambda d: d["layers"][0]["axes"].update(out_ch=[8, 64, 24]), "not strictly increasing"),
    (lambda d: d["layers"][0]["axes"].update(in_ch=[0, 16, 32]), "no zero anchor"),
    (lambda d: d["layers"][0]["axes"].update(density=[0.0, 0.5, 1.5]), "must lie in [0, 1]"),
    (lambda d: d["layers"][0]["mean"].pop(), "has shape (2, 3, 3), expected (3, 3, 3)"),
    (lambda d: d["layers"].append(dict(d["layers"][0])), "appears twice"),
    (lambda d: d["ops"][0].pop("axes"), "missing field 'axes'"),
])
def test_bad_tables_fail_naming_the_problem(tmp_path, mutate, message):
    table, _, _ = _table(np.random.default_rng(4))
    d = _dump(table)
    mutate(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(UsageError) as err:
        LatencyTable.load(path)
    assert message in str(err.value) and "bad.json" in str(err.value)


def test_not_json_and_missing_file(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{nope")
    with pytest.raises(UsageError, match="not valid JSON"):
        LatencyTable.load(path)
    with pytest.raises(UsageError, match="cannot read"):
        LatencyTable.load(tmp_path / "absent.json")


def test_missing_layer_is_named():
    table, layer, op = _table(np.random.default_rng(5))
    other = _layer(name="block.conv2", in_ch=64, out_ch=64)
    groups = (GroupSpec(0, 32, False, False, ()), GroupSpec(1, 64, True, False, ("conv", "block.conv2")))
    spec = NetSpec("toy", 8, 10, (layer, other), (op,), groups)
    with pytest.raises(UsageError, match=r"no entry for layer 'block.conv2' \(pointwise k1 s1 @8 64->64\)"):
        table.check_covers(spec)
    table.check_covers(NetSpec("toy", 8, 10, (layer,), (op,), groups))


def test_off_axis_query_names_layer_axis_and_value():
    table, layer, _ = _table(np.random.default_rng(6))
    e = table.layer(layer)
    with pytest.raises(UsageError, match=r"out_ch 72 \(candidate 1\) is outside .* \[8, 64\]"):
        e.interpolate([24, 72], [16, 16], [0.5, 0.5])
    with pytest.raises(UsageError, match=r"density 1.2 .*\[0, 1\]"):
        e.interpolate([24], [16], [1.2])
    with pytest.raises(UsageError, match=r"in_ch 2 .*\[4, 32\]"):
        e.interpolate([24], [2], [0.5])
    with pytest.raises(UsageError, match=r"in_ch 7.5 .*integer"):
        e.interpolate([24], [7.5], [0.5])


def test_agreement_counts_common_points_within_tolerance():
    table, layer, _ = _table(np.random.default_rng(7))
    other = LatencyTable.from_dict(_dump(table))
    e = other.layer(layer)
    e.mean[0, 0, :] *= 1.2
    within, points = table.agreement(other, tolerance=0.05)
    assert points == 27 + 2 + 1 and within == pytest.approx((points - 3) / points)
    gap = float(np.max(np.abs(e.mean[0, 0, :] - table.layer(layer).mean[0, 0, :])))
    assert table.agreement(other, tolerance=0.05, floor_ms=gap)[0] == 1.0       # an absolute floor covers them
    assert table.agreement(other, tolerance=0.05, floor_ms=gap / 1e3)[0] == pytest.approx(within)
