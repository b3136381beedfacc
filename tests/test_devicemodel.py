"""Modelled device tables: reproducible byte for byte, honest fit, sane shape."""

import numpy as np
import pytest

from latency.devicemodel import DEVICES, THREADS, build_table, fit, main, table_path
from latency.lut import LatencyTable
from latency.netspec import load_shipped
from latency.predictor import Predictor


def test_shipped_tables_regenerate_byte_for_byte():
    assert main(["--check"]) == 0


def test_check_reports_stale(tmp_path, capsys):
    assert main(["--check", "--out-dir", str(tmp_path)]) == 1
    assert "stale or missing" in capsys.readouterr().err


@pytest.mark.parametrize("device", sorted(DEVICES))
@pytest.mark.parametrize("threads", THREADS)
def test_fit_residuals_and_provenance(device, threads):
    f = fit(DEVICES[device], threads)
    assert len(f.rows) == 3 and max(abs(r) for r in f.residuals) < 0.15
    table = LatencyTable.load(table_path(device, threads))
    prov = table.provenance
    assert prov["kind"] == "modelled" and len(prov["sources"]) >= 2
    assert [r["model"] for r in prov["fit_residuals"]] == [r[0] for r in f.rows]
    for model, published, modelled in f.rows:
        pred = Predictor(table, load_shipped(model)).full()
        assert pred == pytest.approx(modelled, rel=1e-4)
        assert pred == pytest.approx(published, rel=0.15)


def test_faster_core_and_more_threads_are_faster():
    for model in ("mobilenet_v2", "resnet18", "resnet56"):
        spec = load_shipped(model)
        ms = {(d, t): Predictor(LatencyTable.load(table_path(d, t)), spec).full() for d in DEVICES for t in THREADS}
        assert ms[("a72", 1)] < ms[("a53", 1)] and ms[("a72", 4)] < ms[("a53", 4)]
        assert ms[("a53", 4)] < ms[("a53", 1)] and ms[("a72", 4)] < ms[("a72", 1)]


def test_sparse_below_crossover_and_monotone_in_channels():
    table = build_table("a53", 1, models=("mobilenet_v1",))
    layer = load_shipped("mobilenet_v1").layer("features.26.0")
    e = table.layer(layer)
    d = e.axes["density"]
    assert np.allclose(e.mean[-1, -1, d >= 0.4], e.mean[-1, -1, -1])
    assert (np.diff(e.mean[-1, -1, d <= 0.4]) > 0).all()
    assert (np.diff(e.mean[:, -1, -1]) > 0).all() and (np.diff(e.mean[-1, :, -1]) > 0).all()
