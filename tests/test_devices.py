"""resolve_table: shipped modelled tables, cached host tables, paths, and clear errors."""

import os

import pytest

from latency.devicemodel import TABLE_MODELS
from latency.devices import cache_dir, host_table_path, resolve_table
from jcw.core.errors import UsageError
from latency.profile import ProfileConfig, profile
from jcw.core.netspec import load_shipped


@pytest.mark.parametrize("device", ["a53", "a72"])
@pytest.mark.parametrize("threads", [1, 4])
def test_shipped_tables_cover_the_zoo(device, threads):
    for model in TABLE_MODELS:
        table = resolve_table(device, model, threads)
        assert table.kind == "modelled" and table.threads == threads and table.device == device


@pytest.mark.parametrize("args, message", [
    (("pi5", "resnet18", 1), "unknown device 'pi5'; accepted: a53, a72"),
    (("a53", "resnet18", 5), "the a53 board has 4 cores, not 5; accepted --threads: 1-4"),
    (("a53", "resnet99", 1), "no shipped spec for model 'resnet99'"),
    (("missing.json", "resnet18", 1), "cannot read latency table missing.json"),
])
def test_errors_say_what_is_accepted(args, message):
    with pytest.raises(UsageError) as e:
        resolve_table(*args)
    assert message in str(e.value)


def test_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("JCW_CACHE_DIR", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("JCW_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x" / "jcw"


def test_host_table_is_cached_and_path_tables_load(monkeypatch, tmp_path):
    monkeypatch.setenv("JCW_CACHE_DIR", str(tmp_path))
    path = host_table_path(1)
    assert path.parent == tmp_path and "-1t.json" in path.name
    config = ProfileConfig(models=("resnet20",), resolution=8, out=path, quick=True, warmup=0)
    profile(config, progress=False)
    before = os.stat(path).st_mtime_ns
    table = resolve_table("host", "resnet20", 1, 8, progress=False)
    assert table.kind == "measured" and os.stat(path).st_mtime_ns == before
    assert resolve_table(str(path), "resnet20", 1, 8).to_json() == table.to_json()
    with pytest.raises(UsageError, match=r"does not cover vgg16 at 32.*profile-latency --model vgg16"):
        resolve_table(str(path), "vgg16", 1)


@pytest.mark.slow
def test_host_profiles_on_first_use(monkeypatch, tmp_path):
    monkeypatch.setenv("JCW_CACHE_DIR", str(tmp_path))
    table = resolve_table("host", "resnet20", 1, 8, progress=False)
    assert table.provenance["grid"] == "quick" and host_table_path(1).exists()


@pytest.mark.parametrize("device", ["a53", "a72"])
def test_modelled_tables_on_demand_for_a_users_network(device, blocks_spec, monkeypatch, tmp_path):
    """A network outside the zoo (tests/user_models/blocks.py: concat, SE, hardswish, SiLU, windowed
    average pool) gets a modelled table built on first use, cached, covering it; 1 to 4 threads."""
    from latency.predictor import Predictor

    monkeypatch.setenv("JCW_CACHE_DIR", str(tmp_path))
    full = {}
    for threads in (1, 2, 4):
        table = resolve_table(device, "blocks", threads, spec=blocks_spec)
        assert table.kind == "modelled" and not table.missing(blocks_spec)
        assert resolve_table(device, "blocks", threads, spec=blocks_spec).to_json() == table.to_json()
        full[threads] = Predictor(table, blocks_spec).full()
    assert len(list((tmp_path / "modelled").glob(f"{device}-*t-blocks@32-*.json"))) == 3
    assert full[4] < full[2] < full[1]
    with pytest.raises(UsageError, match="4 cores"):
        resolve_table(device, "blocks", 5, spec=blocks_spec)


@pytest.mark.parametrize("model", ["resnet50", "mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0"])
def test_new_zoo_models_at_another_resolution_are_modelled_on_demand(model, monkeypatch, tmp_path):
    monkeypatch.setenv("JCW_CACHE_DIR", str(tmp_path))
    table = resolve_table("a72", model, 1, resolution=160)
    assert not table.missing(load_shipped(model).at_resolution(160))
