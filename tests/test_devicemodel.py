"""Modelled device tables: built from our kernels' llvm-mca cycle counts, reproducible byte for byte,
tables on demand for any network, floors of the default search space."""

import json
from pathlib import Path

import numpy as np
import pytest

from latency.devicemodel import (BOARDS, THREADS, CostModel, build_table, comparison, kernel_sources_sha256,
                                 load_kernel_cycles, main, table_path)
from latency.devices import resolve_table
from latency.lut import LatencyTable
from jcw.core.netspec import load_shipped
from latency.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
IMAGENET = ("resnet18", "mobilenet_v1", "mobilenet_v2")
CIFAR = ("resnet20", "resnet56", "vgg16")
NEW = ("resnet50", "mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0")


def test_shipped_tables_regenerate_byte_for_byte():
    assert main(["--check"]) == 0


def test_check_reports_stale(tmp_path, capsys):
    assert main(["--check", "--out-dir", str(tmp_path)]) == 1
    assert "stale or missing" in capsys.readouterr().err


def test_tables_match_the_kernels_they_were_modelled_from():
    """Fails when a kernel source changed after benchmarks/arm_mca.py measured it: re-run
    `python benchmarks/arm_mca.py --json latency/kernel_cycles.json` and `python -m latency.devicemodel`."""
    entries = load_kernel_cycles()
    for sources in {tuple(e["sources"]) for e in entries}:  # one driver's rows: the same files, the same sha
        mine = [e for e in entries if tuple(e["sources"]) == sources]
        assert {e["sources_sha256"] for e in mine} == {kernel_sources_sha256(mine, ROOT)}, sources[0]
    for device, board in BOARDS.items():
        for threads in THREADS:
            prov = LatencyTable.load(table_path(device, threads)).provenance
            assert prov["kind"] == "modelled" and prov["method"] == f"llvm-mca {board.core} + roofline"
            assert entries[0]["sources_sha256"][:12] in prov["engine"]
            for role, k in prov["kernels"].items():
                match = [e for e in entries if e["core"] == board.core and e["kernel"] == k["kernel"]]
                assert match and match[0]["cycles_per_iter"] == k["cycles_per_iter"], role
            loops = {e["kind"]: e for e in entries if e["core"] == board.core and e["macs_per_iter"] == 0}
            assert set(prov["loops"]["cycles_per_vector"]) == set(loops)
            for kind, c in prov["loops"]["cycles_per_vector"].items():
                e = loops[kind]
                assert c == pytest.approx(e["cycles_per_iter"] / (e["outputs_per_iter"] / 4), abs=1e-4), kind
                assert prov["loops"]["sources_sha256"] == e["sources_sha256"][:12]


@pytest.mark.parametrize("model", IMAGENET + CIFAR + NEW)
def test_faster_core_and_more_threads_are_faster(model):
    spec = load_shipped(model)
    ms = {(d, t): Predictor(LatencyTable.load(table_path(d, t)), spec).full() for d in BOARDS for t in THREADS}
    assert ms[("a72", 1)] < ms[("a53", 1)] and ms[("a72", 4)] < ms[("a53", 4)]
    assert ms[("a53", 4)] < ms[("a53", 1)] and ms[("a72", 4)] < ms[("a72", 1)]


def test_cost_falls_with_density_and_rises_with_channels():
    table = build_table("a53", 1, models=("mobilenet_v1",))
    layer = load_shipped("mobilenet_v1").layer("features.26.0")  # 1x1 1024 -> 1024 at 7x7
    e = table.layer(layer)
    assert (np.diff(e.mean[-1, -1, 1:]) > 0).all()  # kept blocks cost cycles
    assert (np.diff(e.mean[:, -1, -1]) >= 0).all() and (np.diff(e.mean[-1, :, -1]) > 0).all()
    model = CostModel.for_board("a53", 1)
    # NEON runs 1x1 layers, dense or sparse, on the 4x1-block tile (cv_tile needs >= 8 lanes)
    assert model.kernel_for(layer) == "tile"
    dw = load_shipped("mobilenet_v1").layer("features.1.0")
    assert model.kernel_for(dw) == ("depthwise_s2" if dw.stride == 2 else "depthwise_s1")


def test_memory_roofline_bounds_a_layer_from_below():
    model = CostModel.for_board("a53", 4)
    layer = load_shipped("mobilenet_v2").layer("features.1.conv.1")  # 1x1 32 -> 16 at 112x112
    ms = float(model.layer_ms(layer, 16, 32, 0.1))
    moved = 4.0 * (32 + 16) * 112 * 112
    assert ms >= moved / (BOARDS["a53"].bandwidth_gbs * 1e6)


def test_table_for_an_unshipped_network_is_built_on_demand(tmp_path, monkeypatch):
    monkeypatch.setenv("JCW_CACHE_DIR", str(tmp_path))
    spec = load_shipped("mobilenet_v2").at_resolution(160)
    assert LatencyTable.load(table_path("a53", 4)).missing(spec)
    table = resolve_table("a53", "mobilenet_v2", 4, spec=spec)
    assert not table.missing(spec) and table.provenance["kind"] == "modelled"
    cached = list((tmp_path / "modelled").glob("a53-4t-mobilenet_v2@160-*.json"))
    assert len(cached) == 1
    assert resolve_table("a53", "mobilenet_v2", 4, spec=spec).to_json() == table.to_json()
    # the same model gives the same numbers for the layers the shipped table also has
    shipped = LatencyTable.load(table_path("a53", 4))
    fc = load_shipped("mobilenet_v2").layers[-1]
    np.testing.assert_allclose(table.layer(spec.layers[-1]).mean, shipped.layer(fc).mean, rtol=1e-5)
    # other thread counts of the 4-core board are modelled too; more cores than the board has are refused
    net = load_shipped("mobilenet_v2")
    one = Predictor(LatencyTable.load(table_path("a53", 1)), net).full()
    assert Predictor(shipped, net).full() < Predictor(resolve_table("a53", "mobilenet_v2", 2), net).full() < one
    with pytest.raises(ValueError, match="4 cores"):
        resolve_table("a53", "mobilenet_v2", 8)


@pytest.mark.parametrize("device", sorted(BOARDS))
@pytest.mark.parametrize("threads", THREADS)
def test_default_space_reaches_its_floor(device, threads):
    from jcw.core.space import SearchSpace

    table = LatencyTable.load(table_path(device, threads))
    for model in IMAGENET + CIFAR:
        space = SearchSpace.for_model(model)
        out_ch, in_ch, density = space.decode_arrays(np.stack([space.minimal(), space.full()]))
        fastest, full = Predictor(table, space.spec).predict(out_ch, in_ch, density)
        assert fastest / full <= (0.30 if model in IMAGENET else 0.50), model


def test_comparison_prints_ours_beside_ncnn():
    text = comparison()
    for name, board in BOARDS.items():
        for (net, threads), ncnn in board.ncnn_ms.items():
            ours = CostModel.for_board(name, threads).network_ms(load_shipped(net))
            assert f"{ours:.1f}" in text and f"{ncnn:.1f}" in text


def test_kernel_cycles_file_is_arm_mca_output():
    entries = json.loads((ROOT / "latency" / "kernel_cycles.json").read_text())
    acts = ("relu", "relu6", "hardswish", "hardsigmoid", "sigmoid", "silu", "gelu", "leaky_relu")
    kinds = {"sparse_1x1", "sparse_3x3", "dense_1x1", "dense_3x3", "depthwise_3x3", "depthwise_kxk",
             "add", "mul", "scale", "copy", "sum", *(f"act_{a}" for a in acts), *(f"epilogue_{a}" for a in acts)}
    for core in ("cortex-a53", "cortex-a72"):
        mine = [e for e in entries if e["core"] == core]
        assert {e["kind"] for e in mine} == kinds
        for e in mine:
            assert e["peak_fraction"] == pytest.approx(e["flops_per_iter"] / e["cycles_per_iter"] / e["peak_flops_per_cycle"],
                                                       rel=1e-3)


def test_every_zoo_model_and_user_specs_get_complete_finite_tables(blocks_spec, fixed_spec):
    """Shipped tables cover every zoo model; tables made for the user specs (concat, SE, group -1, hidden
    linear, every activation) cover them; every grid value is finite and positive, and a network is
    priced above the sum of its parts' fixed costs."""
    from jcw.core.netspec import shipped_models

    for device in BOARDS:
        for threads in THREADS:
            shipped = LatencyTable.load(table_path(device, threads))
            for model in shipped_models():
                assert not shipped.missing(load_shipped(model)), (device, threads, model)
            table = build_table(device, threads, models=(), specs=[blocks_spec, fixed_spec])
            for spec in (blocks_spec, fixed_spec):
                assert not table.missing(spec)
                assert Predictor(table, spec).full() > 0
            for e in [*table.layers.values(), *table.ops.values()]:
                assert np.isfinite(e.mean).all() and (e.mean > 0).all(), e.key


def test_activation_outside_the_relu_class_is_keyed_and_costed():
    """efficientnet_b0 (SiLU) and mobilenet_v2 (ReLU6) share layer signatures: the table holds both, the SiLU
    epilogue costs the epilogue loops' difference per output vector more, ReLU6 costs what ReLU costs."""
    from dataclasses import replace

    from latency.lut import layer_key

    table = LatencyTable.load(table_path("a53", 1))
    eff = load_shipped("efficientnet_b0").layer("features.1.0.block.0.0")   # depthwise 3x3 @112 32, SiLU
    mnv2 = load_shipped("mobilenet_v2").layer("features.1.conv.0.0")       # same signature, ReLU6
    assert eff.signature == mnv2.signature and layer_key(eff) != layer_key(mnv2)
    assert (table.layer(eff).mean > table.layer(mnv2).mean).all()
    vectors = 32 * 112 * 2 * 28 / 2  # depthwise row pairs: 2 output vectors per iteration
    for board in ("a72", "a53"):
        model = CostModel.for_board(board, 1)
        extra = model.loops["epilogue_silu"] - model.loops["epilogue_relu"]
        assert extra > 0 and model.epilogue_cycles("relu6") == model.epilogue_cycles("none") == 0.0
        compute = float(model.layer_ms(eff, 32, 32, 1.0)) - model.fixed_ms
        if board == "a72":  # one compiled loop for every activation
            assert compute == pytest.approx(float(model.layer_ms(mnv2, 32, 32, 1.0)) - model.fixed_ms
                                            + vectors * extra * model.ms_per_cycle, rel=1e-9)
        else:  # SiLU is outside the A53 assembly's activations: the compiled loop, plus the epilogue
            cpp = model.kernels["depthwise_s1_cpp"]
            cycles = 32 * 56 * (28 * cpp.cycles_per_iter + cpp.overhead_cycles) + vectors * extra
            assert compute == pytest.approx(cycles * model.ms_per_cycle, rel=1e-9)
        relu = replace(mnv2, act="relu")
        assert float(model.layer_ms(relu, 32, 32, 1.0)) == float(model.layer_ms(mnv2, 32, 32, 1.0))


def test_5x5_depthwise_runs_the_planes_kernel_and_se_convs_the_gemv():
    model = CostModel.for_board("a72", 1)
    spec = load_shipped("mobilenet_v3_large")
    dw5 = next(x for x in spec.layers if x.kind == "depthwise" and x.kernel == 5)
    assert model.kernel_for(dw5) == "depthwise_planes"
    k = model.kernels["depthwise_planes"]
    ho = dw5.out_res
    taps = dw5.out_ch * ho * -(-ho // 4) * 25 * k.cycles_per_iter
    assert float(model.layer_ms(dw5, dw5.out_ch, dw5.out_ch, 1.0)) > taps * model.ms_per_cycle
    se = next(x for x in spec.layers if x.in_res == 1 and x.kind == "pointwise")
    assert model.kernel_for(se) == "tile"
    tile = model.kernels["tile"]
    # The engine runs a 1x1 conv on one pixel as a matrix-vector product (Conv2d's Gemv path), costed
    # like the fc layers: the tile's cycles for one of its 16 pixels, not a whole 16-pixel tile.
    blocks = -(-se.out_ch // 4) * se.in_ch
    one_tile = (blocks * tile.cycles_per_iter + -(-se.out_ch // 4) * tile.overhead_cycles) * model.ms_per_cycle
    want = one_tile / 16
    moved = 4.0 * (se.in_ch + se.out_ch) + 20.0 * blocks
    assert float(model.layer_ms(se, se.out_ch, se.in_ch, 1.0)) == pytest.approx(
        max(want, moved * model.ms_per_byte) + model.fixed_ms)


def test_new_op_costs_follow_their_loops_and_the_roofline(blocks_spec, fixed_spec):
    from jcw.core.netspec import OpSpec

    for device in BOARDS:
        model = CostModel.for_board(device, 1)
        bw, cyc, fixed = model.ms_per_byte, model.ms_per_cycle, model.fixed_ms
        c, r = 64, 28
        n = c * r * r
        concat = OpSpec("concat", r, c, -3, parts=((0, 24), (1, 40)))
        assert float(model.op_ms(concat, c)) == pytest.approx(
            max(8.0 * n * bw, n / 4 * model.loops["copy"] * cyc) + fixed)
        mul = OpSpec("mul", r, c, 0)
        assert float(model.op_ms(mul, c)) == pytest.approx(
            max(4.0 * c * (2 * r * r + 1) * bw, n / 4 * model.loops["scale"] * cyc) + fixed)
        for act in ("hardswish", "sigmoid", "silu", "gelu", "relu"):
            op = OpSpec("act", r, c, 0, act=act)
            assert float(model.op_ms(op, c)) == pytest.approx(
                max(8.0 * n * bw, n / 4 * model.loops[f"act_{act}"] * cyc) + fixed), act
        pool = OpSpec("avgpool", r, c, 0, kernel=2, stride=2)
        out = 14 * 14
        assert float(model.op_ms(pool, c)) == pytest.approx(
            max(4.0 * c * (r * r + out) * bw, c * 14 * 4 * 4 * model.loops["sum"] * cyc) + fixed)
        # ops with channel parts are priced at their total channels: fewer channels, less time
        costs = model.op_ms(concat, np.array([8.0, 32.0, 64.0]))
        assert (np.diff(costs) > 0).all()
    # on the A53 a sigmoid pass is compute-bound (the exp polynomial and a division per vector), a ReLU
    # pass memory-bound
    a53 = CostModel.for_board("a53", 1)
    n = 64 * 28 * 28
    assert n / 4 * a53.loops["act_sigmoid"] * a53.ms_per_cycle > 8.0 * n * a53.ms_per_byte
    assert n / 4 * a53.loops["act_relu"] * a53.ms_per_cycle < 8.0 * n * a53.ms_per_byte


def test_old_models_entries_are_unchanged_by_the_new_ops():
    """The shipped tables gained the new zoo models; every entry of the old models is what the device
    model gave before activations and the new ops were modelled (ReLU-class keys, memory-only ops)."""
    table = build_table("a72", 4, models=("resnet18", "mobilenet_v2"))
    table = LatencyTable.from_dict(json.loads(table.to_json()))  # as written: 6 significant digits
    shipped = LatencyTable.load(table_path("a72", 4))
    for key, e in [*table.layers.items(), *table.ops.items()]:
        assert key[-1] == ""  # no activation in the key: none, relu and relu6
        s = shipped.layers.get(key) or shipped.ops.get(key)
        np.testing.assert_array_equal(e.mean, s.mean)


def test_a53_depthwise_stride_1_is_costed_from_the_assembly_trips_and_the_compiled_loop():
    """neon_a53 runs T = w / 8 trips of two columns in assembly on rows >= 16 wide and the compiled
    loop elsewhere: a row pair costs 2T assembly columns + the other columns at the compiled rate
    (never the assembly's rate on narrow rows, never its 600-cycle straight-line block as overhead)."""
    from dataclasses import replace

    model = CostModel.for_board("a53", 1)
    asm, cpp = model.kernels["depthwise_s1"], model.kernels["depthwise_s1_cpp"]
    assert asm.variant == "neon_a53" and asm.cycles_per_iter < 0.5 * cpp.cycles_per_iter
    layer = load_shipped("mobilenet_v2").layer("features.1.conv.0.0")  # depthwise 3x3 s1 @112, 32 channels
    assert model.kernel_for(layer) == "depthwise_s1"
    for w in (14, 28, 56):  # compute-bound (at 112 the memory roofline decides on this board)
        at = replace(layer, in_res=w)
        pairs = 32 * -(-w // 2)
        compute = (float(model.layer_ms(at, 32, 32, 1.0)) - model.fixed_ms) / model.ms_per_cycle
        columns = -(-w // 4)
        compiled = pairs * (columns * cpp.cycles_per_iter + cpp.overhead_cycles)
        if w < 16:
            assert compute == pytest.approx(compiled, rel=1e-9)
            continue
        trips = w // 8
        want = pairs * (2 * trips * asm.cycles_per_iter + (columns - 2 * trips + 2) * cpp.cycles_per_iter
                        + cpp.overhead_cycles)
        assert compute == pytest.approx(want, rel=1e-9) and compute < compiled
    a72 = CostModel.for_board("a72", 1)  # the out-of-order core: one compiled loop, its own entry
    k = a72.kernels["depthwise_s1"]
    at = replace(layer, in_res=28)
    cycles = 32 * 14 * (7 * k.cycles_per_iter + k.overhead_cycles)
    assert (float(a72.layer_ms(at, 32, 32, 1.0)) - a72.fixed_ms) / a72.ms_per_cycle == pytest.approx(cycles)


def test_a53_depthwise_stride_2_is_costed_from_the_assembly_trips_and_the_compiled_loop():
    """Stride 2 on neon_a53: T = w / 16 trips of two output vectors in assembly on inner rows of images at
    least 32 wide, the compiled loop for the other output vectors and on narrower images."""
    from dataclasses import replace

    shipped = CostModel.for_board("a53", 1)
    # compute only: this layer sits on the board's memory roofline once the assembly runs it
    model = CostModel(replace(shipped.board, bandwidth_gbs=1e9), 1, shipped.kernels, shipped.loops)
    asm, cpp = model.kernels["depthwise_s2"], model.kernels["depthwise_s2_cpp"]
    assert asm.variant == "neon_a53" and asm.cycles_per_iter < 0.5 * cpp.cycles_per_iter
    layer = next(x for x in load_shipped("mobilenet_v2").layers
                 if x.kind == "depthwise" and x.stride == 2 and x.kernel == 3)
    assert model.kernel_for(layer) == "depthwise_s2"
    ch = layer.out_ch
    for w in (28, 56, 112):
        at = replace(layer, in_res=w)
        ho = at.out_res
        vectors = -(-ho // 4)
        compute = (float(model.layer_ms(at, ch, ch, 1.0)) - model.fixed_ms) / model.ms_per_cycle
        compiled = ch * ho * (vectors * cpp.cycles_per_iter + cpp.overhead_cycles)
        if w < 32:
            assert compute == pytest.approx(compiled, rel=1e-9)
            continue
        trips = w // 16
        want = ch * ho * (2 * trips * asm.cycles_per_iter + (vectors - 2 * trips) * cpp.cycles_per_iter
                          + cpp.overhead_cycles)
        assert compute == pytest.approx(want, rel=1e-9) and compute < compiled
