"""ONNX export: engine-only operator set, names, metadata, and onnxruntime parity for materialized zoo models."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from jcw.export import ENGINE_OPS, export_onnx, read_metadata
from jcw.layers import describe
from jcw.prune.materialize import materialize
from jcw.models import create_model, default_resolution, list_models
from jcw.core.space import SearchSpace


# Two zoo models (residual adds, depthwise + ReLU6) by default; the rest with -m slow (the exporter is slow).
DEFAULT = ("resnet20", "mobilenet_v2")


@pytest.mark.parametrize("name", [n if n in DEFAULT else pytest.param(n, marks=pytest.mark.slow) for n in list_models()])
def test_materialized_model_exports_and_matches_onnxruntime(name, tmp_path, randomize):
    res = 32 if default_resolution(name) == 224 else default_resolution(name)
    model = randomize(create_model(name), seed=3).eval()
    spec = describe(model, res, name)
    space = SearchSpace(spec)
    genes = space.snap(np.random.default_rng(7).random(space.n_genes))
    arch = space.decode(genes)
    small, _ = materialize(model, arch, spec=spec)
    small.train()
    path = export_onnx(small, tmp_path / "sub" / "m.onnx", res, metadata={"model": name, "arch": arch.to_dict()})
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["m.onnx"]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    ops = {n.op_type for n in proto.graph.node}
    assert ops <= ENGINE_OPS, ops - ENGINE_OPS
    assert "Conv" in ops and "GlobalAveragePool" in ops
    assert [i.name for i in proto.graph.input] == ["input"] and [o.name for o in proto.graph.output] == ["logits"]
    meta = read_metadata(path)
    assert meta["model"] == name and meta["arch"] == arch.to_json()
    assert small.training and next(small.parameters()).dtype == torch.float32
    x = torch.randn(1, 3, res, res, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = small.eval()(x).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["logits"], {"input": x.numpy()})[0]
    assert got.shape == expected.shape == (1, spec.num_classes)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.slow
def test_export_rejects_other_pools(tmp_path):
    model = create_model("resnet20")
    model.avgpool = torch.nn.AdaptiveAvgPool2d(2)
    model.fc = torch.nn.Linear(256, 10)
    with pytest.raises(Exception, match="1x1"):
        export_onnx(model, tmp_path / "b.onnx", 32)
    assert not (tmp_path / "b.onnx").exists()
