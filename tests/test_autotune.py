"""Kernel-variant autotune: measured choice cached per CPU and engine version, applied by Engine, defaults kept otherwise."""

import json

import numpy as np
import pytest

from jcw import autotune, kernels


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JCW_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("JCW_KERNELS", raising=False)
    monkeypatch.delenv("JCW_AUTOTUNE", raising=False)
    before = kernels.kernel_variant()
    yield tmp_path
    kernels.set_kernel_variant(before)
    kernels.set_force_scalar(False)


def test_tune_times_every_variant_and_caches_the_record(cache):
    rec = autotune.tune(rounds=1, repeats=1)
    offered = [v for v in kernels.kernel_variants() if v != "scalar"]
    assert rec["variant"] in offered and rec["default"] == kernels.kernel_variant()
    assert set(rec["per_class"]) == set(autotune.CLASSES) and set(rec["per_class"].values()) <= set(offered)
    assert all(set(t) == set(offered) and min(t.values()) > 0 for t in rec["ms"].values())
    path = autotune.write(rec)
    assert path.parent == cache and path.name.startswith("kernels-")
    assert autotune.cached() == json.loads(path.read_text())


def test_cached_choice_is_applied_unless_disabled(cache, monkeypatch):
    offered = [v for v in kernels.kernel_variants() if v != "scalar"]
    other = offered[-1] if len(offered) > 1 else "scalar"
    from jcw.engine.version import ENGINE_VERSION
    rec = {"cpu": autotune.cpu_model(), "engine_version": ENGINE_VERSION, "variant": other}
    autotune.write(rec)
    monkeypatch.setenv("JCW_AUTOTUNE", "0")
    assert autotune.apply_cached() is None and kernels.kernel_variant() == offered[0]
    monkeypatch.setenv("JCW_KERNELS", offered[0])
    monkeypatch.delenv("JCW_AUTOTUNE")
    assert autotune.apply_cached() is None  # an explicit $JCW_KERNELS wins
    monkeypatch.delenv("JCW_KERNELS")
    assert autotune.apply_cached() == other and kernels.kernel_variant() == other


def test_a_record_of_other_kernels_or_another_cpu_is_ignored(cache):
    autotune.write({"cpu": autotune.cpu_model(), "engine_version": "0.0.0+other", "variant": "sse2"})
    assert autotune.cached() is None and autotune.apply_cached() is None
    from jcw.engine.version import ENGINE_VERSION
    autotune.write({"cpu": "some other CPU", "engine_version": ENGINE_VERSION, "variant": "sse2"})
    assert autotune.cached() is None


def test_cli_show_without_cache(cache, capsys):
    assert autotune.main(["--show"]) == 0
    assert "no autotune cache" in capsys.readouterr().out


def test_every_class_layer_falls_in_its_own_class():
    rng = np.random.default_rng(0)
    for name in autotune.CLASSES:
        conv, x = autotune._layer(name, rng)
        assert conv.tune_class(*x.shape[1:]) == name
    stem = kernels.Conv2d(rng.standard_normal((8, 3, 7, 7)).astype(np.float32), stride=2, padding=3)
    assert stem.tune_class(32, 32) == "3x3@28"
    dw5 = kernels.Conv2d(rng.standard_normal((6, 1, 5, 5)).astype(np.float32), padding=2, groups=6)
    assert dw5.tune_class(9, 9) == ""


def test_a_class_runs_its_own_winner_only_where_it_clearly_won(cache):
    offered = [v for v in kernels.kernel_variants() if v != "scalar"]
    if len(offered) < 2:  # one vector variant (a native build): nothing to split; the margin rule is still checked
        offered = offered * 2
    a, b = offered[0], offered[1]
    from jcw.engine.version import ENGINE_VERSION
    rec = {"cpu": autotune.cpu_model(), "engine_version": ENGINE_VERSION, "variant": a,
           "per_class": {"1x1@56": b, "3x3@28": b, "dw3x3@56": a},
           "ms": {"1x1@56": {a: 1.0, b: 0.5}, "3x3@28": {a: 1.0, b: 0.98}, "dw3x3@56": {a: 1.0, b: 2.0}}}
    want = {"1x1@56": b} if a != b else {}
    assert autotune.class_winners(rec) == want  # 3x3@28: 2% faster is within the margin
    autotune.write(rec)
    assert autotune.apply_cached() == a and kernels.kernel_variant() == a
    assert kernels.class_variants() == want
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((8, 16, 1, 1)).astype(np.float32)
    conv = kernels.Conv2d(w1, mode="sparse")
    assert conv.kernel_name(20, 20).split()[0] == (b if want else a)  # a 1x1 layer on a 20 x 20 image
    assert conv.kernel_name(5, 5).split()[0] == a  # 1x1@7: no own winner
    x = rng.standard_normal((1, 16, 20, 20)).astype(np.float32)
    np.testing.assert_allclose(conv.run(x), np.einsum("oi,nihw->nohw", w1[:, :, 0, 0], x), rtol=1e-4, atol=1e-4)
    kernels.set_kernel_variant(a)  # an explicit choice clears the per-class ones
    assert kernels.class_variants() == {}
    with pytest.raises(ValueError, match="class variant must be one of"):
        kernels.set_class_variant("1x1@56", "no-such-variant")


def test_first_use_tunes_caches_and_applies_once(cache, monkeypatch):
    calls = []
    real = autotune.tune
    monkeypatch.setattr(autotune, "tune", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert autotune.cached() is None
    assert autotune.apply_cached() is None and not calls  # without tune_missing nothing is measured
    applied = autotune.apply_cached(tune_missing=True)
    assert calls == [(autotune.FIRST_USE_ROUNDS, autotune.FIRST_USE_REPEATS)]
    rec = autotune.cached()
    assert rec is not None and applied == rec["variant"] == kernels.kernel_variant()
    assert autotune.apply_cached(tune_missing=True) == applied and len(calls) == 1  # cached from now on
    monkeypatch.setenv("JCW_AUTOTUNE", "0")
    autotune.cache_path().unlink()
    assert autotune.apply_cached(tune_missing=True) is None and len(calls) == 1
