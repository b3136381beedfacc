"""Random channel pruning: the sampler, both pipelines end to end (tiny), result.json, usage errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jcw.layers import describe
from jcw.models import create_model, list_models
from jcw.cli.random_prune import main
from jcw.prune.random_prune import RandomPruneConfig, RandomSampler, run
from jcw.core.space import Bounds, SearchSpace

TINY = ["--model", "resnet20", "--resolution", "8", "--samples", "4", "--top-k", "2", "--topk-epochs", "0",
        "--finetune-epochs", "0", "--pretrain-epochs", "1", "--recon-images", "64", "--criterion-images", "32",
        "--val-samples", "128", "--quiet"]


@pytest.fixture(scope="module")
def _cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _cache(_cache_dir, monkeypatch):
    monkeypatch.setenv("JCW_CACHE_DIR", str(_cache_dir))  # one pretraining shared by this module's runs


def _space():
    spec = describe(create_model("resnet20", 10), 32)
    return SearchSpace(spec, bounds=Bounds(**{k: 0.0 for k in Bounds().__dict__}), mode="channel")


def test_sampler_keeps_ratios_inside_eta_one_on_the_grid_and_macs_near_target():
    space = _space()
    full = float(space.macs(space.full())[0])
    sampler = RandomSampler(space, eta=0.45, target=0.5, tolerance=0.03, ratio=lambda g: space.macs(g) / full)
    genes = sampler.sample(40, np.random.default_rng(0))
    channel = genes[:, : space.n_channel_genes]
    assert channel.shape == (40, space.n_channel_genes)
    assert np.all((channel > 0.45) & (channel < 1.0))
    assert np.all(np.isclose(channel[..., None], space.grid).any(-1))
    assert np.all(genes[:, space.n_channel_genes:] == 1.0)
    assert np.all(np.abs(space.macs(genes) / full - 0.5) <= 0.03 + 1e-12)
    assert len({g.tobytes() for g in genes}) == 40
    again = sampler.sample(40, np.random.default_rng(0))
    assert np.array_equal(genes, again)
    assert not np.array_equal(genes, sampler.sample(40, np.random.default_rng(1)))


def test_sampler_reports_an_unreachable_target():
    space = _space()
    full = float(space.macs(space.full())[0])
    sampler = RandomSampler(space, eta=0.85, target=0.2, tolerance=0.01, ratio=lambda g: space.macs(g) / full)
    with pytest.raises(ValueError, match="lower --eta"):
        sampler.sample(3, np.random.default_rng(0))


def test_pretrained_pipeline_writes_result_and_plot(tmp_path, capsys, randomize):
    import torch

    weights = tmp_path / "w.pt"
    torch.save(randomize(create_model("resnet20", 10), seed=3).state_dict(), weights)
    out = tmp_path / "run"
    assert main([*TINY, "--weights", str(weights), "--criterion", "taylor", "--flops-ratio", "0.5",
                 "--tolerance", "0.1", "--topk-epochs", "1", "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert (out / "samples.png").stat().st_size > 1000 and (out / "model.pt").exists()
    assert result["pipeline"] == "pretrained" and result["criterion"] == "taylor"
    assert result["eta"] == pytest.approx(0.45)
    assert len(result["samples"]) == 4 and len(result["top_k"]) == 2
    best = result["best"]
    assert best["index"] in result["top_k"]
    assert abs(best["macs_ratio"] - 0.5) <= 0.1 + 1e-9
    assert 0 < best["params_ratio"] < 1
    accs = [s["val_acc"] for s in result["samples"]]
    assert best["val_acc_topk"] == max(result["samples"][i]["topk_val_acc"] for i in result["top_k"])
    assert sorted(accs, reverse=True)[:2] == sorted((accs[i] for i in result["top_k"]), reverse=True)
    assert all(0 <= a <= 1 for a in accs) and 0 <= best["val_acc_after_finetune"] <= 1
    assert best["val_acc_after_finetune"] == best["val_acc_topk"]  # --finetune-epochs 0: the top-k model as is
    assert sum(1 for s in result["samples"] if "topk_val_acc" in s) == 2
    assert best["arch"]["model"] == "resnet20" and "latency_ms" not in best
    assert "val accuracy" in capsys.readouterr().out


def test_latency_target_uses_the_device_predictor(tmp_path):
    out = tmp_path / "lat"
    assert main([*TINY, "--budget", "5ms", "--device", "a53", "--threads", "1", "--tolerance", "0.15",
                 "--finetune-epochs", "0", "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    full = result["full"]["latency_ms"]
    assert result["target"]["kind"] == "latency" and result["target"]["device"] == "a53"
    assert result["target"]["ratio"] == pytest.approx(5 / full)
    for s in result["samples"]:
        assert abs(s["latency_ms"] / full - 5 / full) <= 0.15 + 1e-9
    assert result["full"]["val_acc"] > 0.2  # pretrained one epoch: better than chance (0.1)


def test_from_scratch_pipeline_trains_a_slimmable_network(tmp_path):
    out = tmp_path / "scratch"
    assert main([*TINY, "--from-scratch", "--slimmable-epochs", "1", "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["pipeline"] == "from_scratch" and result["criterion"] is None
    assert result["full"]["val_acc"] is None
    assert len(result["samples"]) == 4 and all(0 <= s["val_acc"] <= 1 for s in result["samples"])
    assert 0 <= result["best"]["val_acc_after_finetune"] <= 1


@pytest.mark.parametrize("argv, message", [
    (["--model", "nope"], "unknown model"),
    (["--criterion", "nope"], "unknown criterion"),
    (["--budget", "35ms"], "needs --device"),
    (["--budget", "fast", "--device", "a53"], "not a latency"),
    (["--flops-ratio", "1.5"], "--flops-ratio must be in"),
    (["--eta", "1.2"], "--eta must be in"),
    (["--samples", "0"], "--samples must be >= 1"),
    (["--tolerance", "0"], "--tolerance must be > 0"),
    (["--from-scratch", "--weights", "x.pt"], "drop --weights"),
    (["--data", "/no/such/dir"], "/no/such/dir"),
])
def test_usage_errors_exit_2_with_a_message(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_budget_at_or_above_the_unpruned_latency_is_refused(capsys, tmp_path):
    assert main([*TINY, "--budget", "1000ms", "--device", "a53", "--out", str(tmp_path / "x")]) == 2
    assert "nothing to prune" in capsys.readouterr().err


def test_both_target_flags_are_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--flops-ratio", "0.5", "--budget", "3ms"])
    assert e.value.code == 2


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("from_scratch", [False, True])
def test_both_pipelines_run_on_every_zoo_model(name, from_scratch, tmp_path):
    config = RandomPruneConfig(model=name, resolution=32, samples=2, top_k=1, topk_epochs=0, finetune_epochs=0,
                               pretrain_epochs=0, slimmable_epochs=0, recon_images=16, criterion_images=8,
                               val_samples=32, tolerance=0.2, from_scratch=from_scratch, out=str(tmp_path / name),
                               quiet=True)
    result = run(config)
    assert len(result["samples"]) == 2
    assert abs(result["best"]["macs_ratio"] - 0.5) <= 0.2 + 1e-9


@pytest.mark.slow
def test_search_strategy_random_gives_a_feasible_front(tmp_path):
    from jcw.cli.search import main as search_main

    config = tmp_path / "s.yaml"
    config.write_text("pretrain_epochs: 1\nval_samples: 64\ncalib_batches: 1\n")
    out = tmp_path / "search"
    assert search_main(["--config", str(config), "--model", "resnet20", "--device", "a53", "--threads", "1",
                        "--budget", "6ms", "--strategy", "random", "--population", "4", "--generations", "2",
                        "--supernet-steps", "2", "--train-resolution", "8", "--out", str(out), "--quiet"]) == 0
    front = json.loads((out / "front.json").read_text())
    assert front["strategy"] == "random"
    candidates = front["candidates"]
    assert candidates and all(c["latency_ms"] <= 6.0 for c in candidates)
