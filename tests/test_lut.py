"""LatencyTable: schema round trip, validation messages, trilinear interpolation."""

import json

import numpy as np
import pytest

from latency.lut import (QUICK_RATIOS, Entry, LatencyTable, describe_key, layer_axes, layer_key, op_axes, op_key,
                         parts_channels, space_channels)
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


def _new_ops_table():
    """A table with an entry of every new key kind: act ops (the act in the key), mul, concat, a windowed
    average pool, a SiLU conv beside the ReLU-class conv of the same signature."""
    prov = {"kind": "modelled"}
    silu = LayerSpec("c", "pointwise", 1, 1, 0, 1, 8, 32, 64, 1, 0, act="silu")
    relu6 = LayerSpec("c", "pointwise", 1, 1, 0, 1, 8, 32, 64, 1, 0, act="relu6")
    ops = [OpSpec("act", 8, 24, 0, act="hardswish"), OpSpec("act", 8, 24, 0, act="relu"),
           OpSpec("mul", 8, 24, 0), OpSpec("concat", 8, 24, -3, parts=((0, 12), (1, 12))),
           OpSpec("avgpool", 8, 24, 0, kernel=2, stride=2), OpSpec("add", 8, 24, 0, act="silu")]
    table = LatencyTable("a53", 1, prov)
    for n, layer in enumerate((silu, relu6)):
        axes = layer_axes(layer, quick=True)
        shape = tuple(1 if axes[a] is None else len(axes[a]) for a in ("out_ch", "in_ch", "density"))
        table.layers[layer_key(layer)] = Entry.build(layer_key(layer), axes, np.full(shape, 1.0 + n))
    for n, op in enumerate(ops):
        axes = op_axes(op, quick=True)
        table.ops[op_key(op)] = Entry.build(op_key(op), axes, np.linspace(0.1, 0.2, len(axes["out_ch"])) * (n + 1))
    return table, (silu, relu6), ops


def test_new_keys_round_trip_through_json(tmp_path):
    table, (silu, relu6), ops = _new_ops_table()
    path = table.save(tmp_path / "new.json")
    again = LatencyTable.load(path)
    assert again.to_json() == table.to_json()
    assert set(again.layers) == set(table.layers) and set(again.ops) == set(table.ops)
    for op in ops:
        np.testing.assert_allclose(again.op(op).mean, table.op(op).mean, rtol=1e-6)
    assert again.layer(silu).mean[0, 0, 0] == 1.0 and again.layer(relu6).mean[0, 0, 0] == 2.0
    d = json.loads(path.read_text())
    acts = sorted(e.get("act", "") for e in d["ops"])
    assert acts == ["", "", "", "hardswish", "relu", "silu"]          # the act op keeps relu; add/mul only others
    assert sorted(e.get("act", "") for e in d["layers"]) == ["", "silu"]
    assert "act" not in d["layers"][0]                                  # ReLU class: no field, as old tables
    # describe_key names the activation and the window
    assert describe_key(op_key(ops[0])) == "act @8 c24 hardswish"
    assert describe_key(op_key(ops[4])) == "avgpool k2 s2 p0 @8 c24"
    assert describe_key(layer_key(silu)) == "pointwise k1 s1 @8 32->64 silu"


def test_tables_without_activations_load_and_answer_six_field_keys(tmp_path):
    """A table written before activations were keyed (no "act" anywhere) loads; its entries are those of
    the ReLU class, and lookups by the old 6-field keys still work."""
    table, layer, op = _table(np.random.default_rng(11))
    path = table.save(tmp_path / "old.json")
    assert '"act"' not in path.read_text()
    again = LatencyTable.load(path)
    assert again.layer(layer) is not None and again.op(op) is not None
    assert tuple(layer.signature) in again.layers and again.layers[tuple(layer.signature)] is again.layer(layer)
    assert again.layer(LayerSpec(**{**layer.__dict__, "act": "relu6"})) is again.layer(layer)
    with pytest.raises(UsageError, match=r"no entry for layer 'conv' \(pointwise k1 s1 @8 32->64 hardswish\)"):
        again.layer(LayerSpec(**{**layer.__dict__, "act": "hardswish"}))


@pytest.mark.parametrize("act, message", [("swish", "must be one of"), ("relu", "must be one of")])
def test_bad_act_field_is_named(tmp_path, act, message):
    table, _, _ = _table(np.random.default_rng(12))
    d = _dump(table)
    d["layers"][0]["act"] = act          # relu is the ReLU class: only act ops name it
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(UsageError, match=message):
        LatencyTable.load(path)


def test_axes_of_parts_fixed_channels_and_hidden_linears():
    # a concatenation of two prunable parts and a fixed one: every sum, and every count up to the total
    parts = ((0, 12), (1, 12), (-1, 5))
    sums = parts_channels(parts, QUICK_RATIOS)
    assert sums[-1] == 29 and 13 in sums and set(space_channels(29, QUICK_RATIOS)) <= set(sums)
    assert parts_channels(((-1, 7), (-1, 5))) == [12]
    reader = LayerSpec("mix", "pointwise", 1, 1, 0, 1, 8, 29, 16, 2, -3, in_parts=parts)
    assert layer_axes(reader, quick=True)["in_ch"] == sums
    op = OpSpec("concat", 8, 29, -3, parts=parts)
    assert op_axes(op, quick=True)["out_ch"] == sums
    # group -1: fixed output (a depthwise conv reading fixed channels), fixed input of a conv reading them
    dw = LayerSpec("dw", "depthwise", 3, 1, 1, 16, 8, 16, 16, -1, -1)
    assert layer_axes(dw)["out_ch"] == [16] and layer_axes(dw)["in_ch"] is None
    pw = LayerSpec("pw", "pointwise", 1, 1, 0, 1, 8, 16, 32, 3, -1)
    assert layer_axes(pw)["in_ch"] == [16] and layer_axes(pw)["out_ch"] == space_channels(32)
    # a hidden linear with a group of its own varies; the classifier (group -1) keeps its classes
    hidden = LayerSpec("h", "fc", 1, 1, 0, 1, 1, 64, 24, 4, 2)
    classifier = LayerSpec("fc", "fc", 1, 1, 0, 1, 1, 24, 10, -1, 4)
    assert layer_axes(hidden)["out_ch"] == space_channels(24) and layer_axes(hidden)["density"] is None
    assert layer_axes(classifier)["out_ch"] == [10] and layer_axes(classifier)["in_ch"] == space_channels(24)
