"""Whole-model parity: every zoo model at random joint-pruned archs, engine vs onnxruntime on the exported file."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from jcw.engine import Engine
from jcw.export import export_onnx
from jcw.prune.materialize import materialize
from jcw.models import create_model, default_resolution, list_models
from jcw.core.space import SearchSpace

SMALL = {224: 64, 32: 32}  # test resolution per default resolution: keeps the default run fast


def perturb_batchnorm(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so that folding them at load is exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                for t, lo, hi in ((m.weight, 0.5, 1.5), (m.bias, -0.2, 0.2), (m.running_mean, -0.2, 0.2),
                                  (m.running_var, 0.5, 2.0)):
                    t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
    return model


def random_arch(space: SearchSpace, rng: np.random.Generator):
    """A random genome between the space's bounds, snapped to the grid, decoded."""
    genes = space.snap(rng.uniform(space.lower, space.upper))[0]
    return space.decode(genes)


def check_pruned_model(name: str, resolution: int, seed: int, tmp_path) -> None:
    rng = np.random.default_rng(seed)
    space = SearchSpace.for_model(name, resolution=resolution)
    model = perturb_batchnorm(create_model(name), seed=int(rng.integers(1 << 30))).eval()
    arch = random_arch(space, rng)
    small, _ = materialize(model, arch, spec=space.spec)
    proto = onnx.load(str(export_onnx(small, tmp_path / f"{name}.onnx", resolution)))
    x = rng.standard_normal((2, 3, resolution, resolution), dtype=np.float32)
    engine = Engine(proto)
    got = engine.run(x)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    want = np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(2)])
    assert got.shape == want.shape
    rel = float(np.abs(got - want).max()) / float(np.abs(want).max())
    assert rel <= 1e-4, rel
    convs = [p for p in engine.plan if p.op in ("conv", "depthwise")]
    assert len(convs) == sum(x.kind != "fc" for x in space.spec.layers)


@pytest.mark.parametrize("name", list_models())
def test_pruned_zoo_model_matches_onnxruntime(name, tmp_path):
    check_pruned_model(name, SMALL[default_resolution(name)], sum(map(ord, name)), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name", list_models())
def test_pruned_zoo_model_matches_onnxruntime_at_default_resolution(name, seed, tmp_path):
    check_pruned_model(name, default_resolution(name), seed, tmp_path)
