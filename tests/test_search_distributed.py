"""The supernet on two gloo processes (half of every batch each) computes what one process does on the whole batch."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import TensorDataset

from jcw.train.distributed import DistContext, init_distributed, shutdown
from jcw.layers import describe
from jcw.models import create_model
from jcw.core.space import SearchSpace
from jcw.search.supernet import SandwichRule, Supernet, SupernetEstimator
from jcw.train.loops import RandomBatches, gather, ordered_batches, sgd

RES, BATCH = 16, 8


def _problem(randomize):
    """A random resnet20 at 16 px, its space, six candidates and random data (24 train, 13 val samples)."""
    model = randomize(create_model("resnet20", num_classes=10), seed=1)
    spec = describe(model, RES, name="resnet20")
    space = SearchSpace(spec)
    rng = np.random.default_rng(2)
    genes = np.concatenate([space.snap(rng.uniform(space.lower, space.upper, size=(4, space.n_genes))),
                            space.full()[None], space.minimal()[None]])
    g = torch.Generator().manual_seed(3)
    train = TensorDataset(torch.randn(24, 3, RES, RES, generator=g), torch.randint(0, 10, (24,), generator=g))
    val = TensorDataset(torch.randn(13, 3, RES, RES, generator=g), torch.randint(0, 10, (13,), generator=g))
    return model, spec, space, genes, train, val


def _train(dist: DistContext, model, spec, space, genes, train) -> dict:
    """Two sandwich steps on batches of BATCH; only rank 0's generator (seed 4) may decide candidates and batches."""
    supernet = Supernet(model, spec, dist)
    out_ch, _, density = space.decode_arrays(genes)
    supernet.set_candidates(out_ch, density)
    generator = torch.Generator().manual_seed(4 if dist.is_main else 40 + dist.rank)
    rule = SandwichRule(space.macs(genes), generator, sampled=2)
    trained = supernet.train_steps(RandomBatches(train, BATCH, generator, dist=dist), 2, rule,
                                   sgd(supernet.parameters(), 0.05))
    return {"state": supernet.net.state_dict(), "trained": trained}


def _calibrate(dist: DistContext, model, spec, space, genes, train, val) -> dict:
    """Every candidate's BatchNorm statistics from two calibration batches of BATCH, and its val loss / accuracy."""
    supernet = Supernet(model, spec, dist)
    out_ch, _, density = space.decode_arrays(genes)
    supernet.set_candidates(out_ch, density)
    calib = [gather(train, dist.split(torch.arange(s, s + BATCH))) for s in (0, BATCH)]
    val_batches = ordered_batches(val, 5, dist=dist)
    scores = []
    for i in range(len(genes)):
        supernet.calibrate(i, calib)
        scores.append(supernet.measure(i, val_batches))
    stats = {k: torch.cat([getattr(bn, k).flatten() for bn in supernet._norms]) for k in ("cand_mean", "cand_var", "cand_count")}
    return {**stats, "scores": scores}


def _estimate(dist: DistContext, model, spec, space, genes, train, val) -> dict:
    """SupernetEstimator (train 2 steps, calibrate, measure) driven by rank 0; the others follow."""
    supernet = Supernet(model, spec, dist)
    generator = torch.Generator().manual_seed(5 if dist.is_main else 50 + dist.rank)
    calib = [gather(train, dist.split(torch.arange(BATCH)))]
    estimator = SupernetEstimator(supernet, space, RandomBatches(train, BATCH, generator, dist=dist), calib,
                                  ordered_batches(val, BATCH, dist=dist), steps=2, lr=0.05, generator=generator,
                                  references=space.uniform(0.5)[None])
    if not dist.is_main:
        estimator.follow()
        return {}
    loss, acc = estimator(genes[:3])
    again = estimator.measure(genes[3:])
    estimator.release()
    return {"scores": (loss, acc), "references": estimator.reference_scores, "measured": again,
            "state": supernet.net.state_dict()}


JOBS = {"train": _train, "calibrate": _calibrate, "estimate": _estimate}


def _worker(rank: int, job: str, args: tuple, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist = init_distributed("cpu", rank=rank, world_size=2, init_method=f"file://{init_file}")
    try:
        result = JOBS[job](dist, *args)
        if dist.is_main:
            torch.save(result, out)
    finally:
        shutdown(dist)


def _on_two_ranks(tmp_path, job: str, *args) -> dict:
    # fork: the children reuse this process's imports (spawn or torchrun would import torch twice more)
    mp.start_processes(_worker, args=(job, args, str(tmp_path / "rendezvous"), str(tmp_path / "out.pt")), nprocs=2,
                       start_method="fork")
    return torch.load(tmp_path / "out.pt", weights_only=False)


def test_two_ranks_on_half_batches_train_like_one_process(tmp_path, randomize):
    model, spec, space, genes, train, _ = _problem(randomize)
    single = _train(DistContext(), model, spec, space, genes, train)
    two = _on_two_ranks(tmp_path, "train", model, spec, space, genes, train)

    assert two["trained"] == single["trained"]
    assert not torch.allclose(single["state"]["conv1.weight"], model.conv1.weight, atol=1e-4)  # it did train
    for key, value in single["state"].items():
        torch.testing.assert_close(two["state"][key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_two_ranks_combine_batchnorm_statistics_and_validation_sums(tmp_path, randomize):
    model, spec, space, genes, train, val = _problem(randomize)
    single = _calibrate(DistContext(), model, spec, space, genes, train, val)
    two = _on_two_ranks(tmp_path, "calibrate", model, spec, space, genes, train, val)

    assert torch.equal(two["cand_count"], single["cand_count"])
    assert int(single["cand_count"].min()) == 2
    torch.testing.assert_close(two["cand_mean"], single["cand_mean"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(two["cand_var"], single["cand_var"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(two["scores"], single["scores"], rtol=1e-5)
    assert len({round(loss, 4) for loss, _ in single["scores"]}) > 1  # the candidates differ


def test_estimator_followed_by_the_other_rank_scores_like_one_process(tmp_path, randomize):
    model, spec, space, genes, train, val = _problem(randomize)
    single = _estimate(DistContext(), model, spec, space, genes, train, val)
    two = _on_two_ranks(tmp_path, "estimate", model, spec, space, genes, train, val)

    for key in ("scores", "references", "measured"):
        np.testing.assert_allclose(np.asarray(two[key]), np.asarray(single[key]), rtol=1e-4, atol=1e-6)
    for key, value in single["state"].items():
        torch.testing.assert_close(two["state"][key], value, rtol=1e-4, atol=1e-5, msg=key)


def _torchrun(args: list, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-P", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "jcw.search", *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_torchrun_search_writes_each_file_once_and_resumes(tmp_path):
    env = {**os.environ, "JCW_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text("pretrain_epochs: 1\nbatch_size: 32\nval_samples: 64\n")
    out = tmp_path / "run"
    args = ["--config", str(tiny), "--model", "resnet20", "--device", "a72", "--threads", "1",
            "--train-resolution", "16", "--population", "4", "--supernet-steps", "2", "--out", str(out)]
    done = _torchrun(args + ["--generations", "1"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["best.json", "checkpoint.pt", "config.json", "front.json",
                                                     "front.png", "history.json"]
    assert done.stdout.count("results: ") == 1  # only rank 0 prints
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    assert json.loads((out / "front.json").read_text())["world_size"] == 2

    config = json.loads((out / "config.json").read_text())  # a run stopped after 1 of 2 generations
    (out / "config.json").write_text(json.dumps({**config, "generations": 2}))
    (out / "front.json").unlink()
    (out / ".incomplete").touch()
    resumed = _torchrun(["--resume", "--quiet", "--out", str(out)], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [g["generation"] for g in json.loads((out / "history.json").read_text())["generations"]] == [0, 1]
    assert json.loads((out / "front.json").read_text())["world_size"] == 2
    assert not (out / ".incomplete").exists()
