"""The Python API as the README shows it: create, predict, search, save, materialize, export, run."""

import json

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import jcw


def synthetic(n: int, classes: int, resolution: int, seed: int) -> TensorDataset:
    """Images whose class is the quadrant holding a bright square (learnable in a few steps)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    images = 0.1 * torch.randn(n, 3, resolution, resolution, generator=g)
    half = resolution // 2
    for i, y in enumerate(labels.tolist()):
        r, c = divmod(y, 2)
        images[i, :, r * half:(r + 1) * half, c * half:(c + 1) * half] += 1.0
    return TensorDataset(images, labels)


def test_the_readme_example_runs_as_written(tmp_path, capsys):
    model = jcw.create_model("resnet20", num_classes=4)
    full_ms = jcw.predict_latency(model, device="a53", threads=4, resolution=32)
    assert full_ms > 0
    budget_ms = 0.7 * full_ms
    data = (synthetic(96, 4, 16, seed=0), synthetic(48, 4, 16, seed=1))
    result = jcw.search(model, data=data, device="a53", threads=4, budget=f"{budget_ms}ms", resolution=32,
                        population=4, generations=2, seed=0, progress=False, out=None,
                        supernet_steps=2, pretrain_epochs=1, batch_size=16, val_samples=48)
    assert capsys.readouterr().out == ""  # nothing printed without progress=True
    assert not any(tmp_path.iterdir())  # and nothing written without out

    assert result.front and all(c.latency_ms <= budget_ms for c in result.front)
    assert all(isinstance(c, jcw.Candidate) and isinstance(c.arch, jcw.Arch) for c in result.front)
    best = result.best
    assert best.val_acc == max(c.val_acc for c in result.front)
    assert [r.name for r in result.references] == ["unpruned", "uniform 0.75x", "uniform 0.5x"]
    assert result.references[0].latency_ms == pytest.approx(full_ms)
    assert len(result.history) == 2 and result.hypervolume >= 0
    assert jcw.predict_latency(best.arch, device="a53", threads=4) == pytest.approx(best.latency_ms)
    assert best.macs < result.references[0].macs

    run = result.save(tmp_path / "run")
    front = json.loads((run / "front.json").read_text())
    assert [c["latency_ms"] for c in front["candidates"]] == [c.latency_ms for c in result.front]
    assert json.loads((run / "best.json").read_text())["arch"] == best.arch.to_dict()
    assert {p.name for p in run.iterdir()} >= {"front.json", "best.json", "history.json", "front.png", "config.json"}
    assert jcw.SearchResult.load(run).front == result.front

    small, masks = jcw.materialize(model, best.arch)
    path = jcw.export_onnx(small, tmp_path / "m.onnx", resolution=32, masks=masks)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    y = jcw.Engine(str(path), threads=4).run(x)
    with torch.no_grad():
        expected = small.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-3, atol=1e-3)


def test_search_takes_a_data_bundle_and_leaves_the_model_unchanged(tmp_path):
    from jcw.data import DataBundle

    model = jcw.create_model("resnet20", num_classes=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bundle = DataBundle(synthetic(64, 4, 16, 2), synthetic(32, 4, 16, 3), 4, 16, "quadrants")
    result = jcw.search(model, data=bundle, device="a72", population=4, generations=1, supernet_steps=1,
                        pretrain_epochs=1, batch_size=16, out=tmp_path / "run")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert result.info["data"] == "quadrants" and result.budget_ms is None
    assert (tmp_path / "run" / "front.json").is_file() and (tmp_path / "run" / "checkpoint.pt").is_file()


@pytest.mark.parametrize("kwargs, message", [
    ({"budget": "fast"}, "is not a latency"),
    ({"budget": "0.001ms"}, "below the fastest arch"),
    ({"device": "a99"}, "a99"),
    ({"population": 2}, "population must be at least 4"),
    ({"supernet_stepz": 3}, "unknown option(s) supernet_stepz"),
    ({"data": "nowhere/at/all"}, "neither a known name nor an existing directory"),
])
def test_user_mistakes_raise_one_usage_error(kwargs, message):
    model = jcw.create_model("resnet20", num_classes=10)
    with pytest.raises(jcw.UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        jcw.search(model, **kwargs)


def test_a_model_jcw_cannot_describe_is_a_usage_error():
    class Recurrent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3)
            self.fc = torch.nn.Linear(8, 10)

        def forward(self, x):
            for _ in range(int(x.sum() > 0) + 1):  # data-dependent control flow: fx cannot trace it
                x = x
            return self.fc(self.conv(x).mean((2, 3)))

    with pytest.raises(jcw.UsageError, match="Recurrent"):
        jcw.search(Recurrent(), resolution=32)
    with pytest.raises(jcw.UsageError, match="more classes|classes but"):
        jcw.search(jcw.create_model("resnet20", num_classes=2))
