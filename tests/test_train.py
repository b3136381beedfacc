"""python -m jcw.train: arch selection, CLI errors, checkpoint resume, the saved model on the embedded data."""

import json

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from jcw.core.space import SearchSpace
from jcw.cli.train import main
from jcw.train.stages import CHECKPOINT, MODEL, StagedTrainer, TrainConfig, load_trained, select_arch
from jcw.core.errors import UsageError


def _front(tmp_path, train_resolution=8):
    """A front.json of three resnet20 candidates (latency 10/20/40 ms, accuracy .5/.7/.9)."""
    space = SearchSpace.for_model("resnet20")
    genes = [space.minimal(), space.uniform(0.6, 0.5), space.full()]
    front = {"model": "resnet20", "train_resolution": train_resolution, "candidates": [
        {"arch": space.decode(g).to_dict(), "latency_ms": t, "val_acc": a, "val_loss": 1.0}
        for g, t, a in zip(genes, (10.0, 20.0, 40.0), (0.5, 0.7, 0.9))]}
    path = tmp_path / "front.json"
    path.write_text(json.dumps(front))
    return path, [space.decode(g) for g in genes]


def test_pick_takes_the_most_accurate_candidate_within_the_budget(tmp_path):
    path, archs = _front(tmp_path)
    arch, resolution = select_arch(TrainConfig(result=path, pick="35ms"))
    assert arch == archs[1] and resolution == 8
    assert select_arch(TrainConfig(result=path, pick="40"))[0] == archs[2]
    with pytest.raises(UsageError, match="fastest takes 10.00 ms"):
        select_arch(TrainConfig(result=path, pick="5ms"))
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"device": "a53", "arch": archs[0].to_dict()}))
    assert select_arch(TrainConfig(arch=best))[0] == archs[0]


def test_pick_best_uses_the_budget_the_search_recorded(tmp_path):
    path, archs = _front(tmp_path)
    assert select_arch(TrainConfig(result=path, pick="best"))[0] == archs[2]  # no budget: the most accurate
    front = json.loads(path.read_text())
    path.write_text(json.dumps({**front, "budget_ms": 25.0}))
    assert select_arch(TrainConfig(result=path, pick="best"))[0] == archs[1]
    assert select_arch(TrainConfig(result=path, pick="35ms"))[0] == archs[1]
    assert select_arch(TrainConfig(result=path, pick="45ms"))[0] == archs[2]


@pytest.mark.parametrize("argv,message", [
    (["--arch", "nope.json", "--from-scratch"], "nope.json: no such file"),
    (["--result", "FRONT", "--pick", "fast", "--from-scratch"], "--pick"),
    (["--result", "FRONT", "--pick", "35ms"], "--from-scratch"),
    (["--result", "FRONT", "--from-scratch"], "needs --pick"),
    (["--result", "FRONT", "--pick", "35ms", "--from-scratch", "--data", "nowhere:x"], "nowhere"),
    (["--result", "FRONT", "--pick", "35ms", "--from-scratch", "--weights", "w.pt"], "not allowed"),
])
def test_cli_usage_errors_exit_2_with_a_message(tmp_path, capsys, argv, message):
    path, _ = _front(tmp_path)
    argv = [str(path) if a == "FRONT" else a for a in argv] + ["--out", str(tmp_path / "run"), "--quiet"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def _tiny(tiny_net, seed=5):
    g = torch.Generator().manual_seed(seed)
    model = tiny_net(width=8, classes=3, seed=seed)
    images = torch.randn(96, 3, 6, 6, generator=g)
    labels = images.mean((2, 3)).argmax(1)
    return model, TensorDataset(images[:64], labels[:64]), TensorDataset(images[64:], labels[64:])


class _Crash(Exception):
    pass


class _CrashingTrainer(StagedTrainer):
    """Dies right after writing its ``after``-th checkpoint, as a killed job would."""

    def __init__(self, *args, after: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.after = after

    def _save_checkpoint(self, *args):
        super()._save_checkpoint(*args)
        self.after -= 1
        if self.after == 0:
            raise _Crash


@pytest.mark.parametrize("crash_after", [2, 4, 6])
def test_resume_continues_to_the_same_result(tmp_path, crash_after, tiny_net):
    config = TrainConfig(epochs_dense=2, epochs_admm=2, epochs_finetune=2, batch_size=16, lr=0.1, rho=0.1,
                         seed=2, quiet=True)
    densities = {"conv1": 0.5, "conv2": 0.25}
    model, train, val = _tiny(tiny_net)
    whole = StagedTrainer(model, densities, train, val, config, out=tmp_path / "a").run()
    (tmp_path / "b").mkdir()
    model, train, val = _tiny(tiny_net)
    with pytest.raises(_Crash):
        _CrashingTrainer(model, densities, train, val, config, out=tmp_path / "b", after=crash_after).run()
    assert (tmp_path / "b" / CHECKPOINT).exists()
    model, train, val = _tiny(tiny_net, seed=99)  # different starting weights: everything must come from the checkpoint
    _, train, val = _tiny(tiny_net)
    resumed = StagedTrainer(model, densities, train, val, config, out=tmp_path / "b").run(resume=True)
    assert resumed.accuracy == whole.accuracy
    assert [h["val_loss"] for h in resumed.history] == pytest.approx([h["val_loss"] for h in whole.history])
    a = torch.load(tmp_path / "a" / MODEL, weights_only=True)
    b = torch.load(tmp_path / "b" / MODEL, weights_only=True)
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value)


def test_train_cli_on_the_embedded_digits(tmp_path, capsys):
    path, archs = _front(tmp_path)
    out = tmp_path / "run"
    assert main(["--result", str(path), "--pick", "15ms", "--from-scratch", "--epochs-dense", "2",
                 "--epochs-admm", "2", "--epochs-finetune", "1", "--rho", "0.1", "--lr", "0.1",
                 "--out", str(out), "--quiet"]) == 0
    assert "energy outside the mask after ADMM" in capsys.readouterr().out
    model, record = load_trained(out / MODEL)
    assert record["arch"] == archs[0].to_dict() and record["num_classes"] == 10
    assert set(record["accuracy"]) == {"dense", "pruned", "finetuned"}
    assert record["accuracy"]["dense"] > 0.3  # digits: 10 classes, chance 0.1
    modules = dict(model.named_modules())
    for layer in archs[0].layers:
        if layer.name not in record["masks"]:
            assert layer.density == 1.0
            continue
        mask, weight = record["masks"][layer.name], modules[layer.name].weight.detach()
        assert mask.shape == weight.shape
        assert torch.count_nonzero(weight[~mask]) == 0
        blocks = np.prod(weight.shape) // 4
        assert record["densities"][layer.name] == pytest.approx(round(layer.density * blocks) / blocks)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert model(x).shape == (2, 10)
    # --resume of a finished run reproduces the result without training
    assert main(["--result", str(path), "--pick", "15ms", "--from-scratch", "--epochs-dense", "2",
                 "--epochs-admm", "2", "--epochs-finetune", "1", "--rho", "0.1", "--lr", "0.1",
                 "--out", str(out), "--quiet", "--resume"]) == 0
    assert torch.load(out / MODEL, weights_only=True)["accuracy"] == record["accuracy"]
