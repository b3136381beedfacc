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


def test_shipped_tables_regenerate_byte_for_byte():
    assert main(["--check"]) == 0


def test_check_reports_stale(tmp_path, capsys):
    assert main(["--check", "--out-dir", str(tmp_path)]) == 1
    assert "stale or missing" in capsys.readouterr().err


def test_tables_match_the_kernels_they_were_modelled_from():
    """Fails when a kernel source changed after benchmarks/arm_mca.py measured it: re-run
    `python benchmarks/arm_mca.py --json latency/kernel_cycles.json` and `python -m latency.devicemodel`."""
    entries = load_kernel_cycles()
    assert {e["sources_sha256"] for e in entries} == {kernel_sources_sha256(entries, ROOT)}
    for device, board in BOARDS.items():
        for threads in THREADS:
            prov = LatencyTable.load(table_path(device, threads)).provenance
            assert prov["kind"] == "modelled" and prov["method"] == f"llvm-mca {board.core} + roofline"
            assert entries[0]["sources_sha256"][:12] in prov["engine"]
            for role, k in prov["kernels"].items():
                match = [e for e in entries if e["core"] == board.core and e["kernel"] == k["kernel"]]
                assert match and match[0]["cycles_per_iter"] == k["cycles_per_iter"], role


@pytest.mark.parametrize("model", IMAGENET + CIFAR)
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
    kinds = {"sparse_1x1", "sparse_3x3", "dense_1x1", "dense_3x3", "depthwise_3x3"}
    for core in ("cortex-a53", "cortex-a72"):
        mine = [e for e in entries if e["core"] == core]
        assert {e["kind"] for e in mine} == kinds
        for e in mine:
            assert e["peak_fraction"] == pytest.approx(e["flops_per_iter"] / e["cycles_per_iter"] / e["peak_flops_per_cycle"],
                                                       rel=1e-3)
