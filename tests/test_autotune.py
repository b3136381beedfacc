"""Kernel-variant autotune: measured choice cached per CPU and engine version, applied by Engine, defaults kept otherwise."""

import json

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
