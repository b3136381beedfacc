"""python -m jcw.export: BatchNorm folded, masks stored as zeros, metadata, same outputs in onnxruntime and engine."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from jcw.engine import Engine
from jcw.cli.export import main
from jcw.core.space import SearchSpace
from jcw.train.stages import MODEL, TrainConfig, load_trained, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A resnet20 arch (narrow, densities 0.3-0.8) trained briefly on the embedded digits at 8 px."""
    tmp = tmp_path_factory.mktemp("export")
    space = SearchSpace.for_model("resnet20")
    arch = space.decode(space.uniform(0.6, 0.5))
    (tmp / "arch.json").write_text(json.dumps({"arch": arch.to_dict(), "train_resolution": 8}))
    train(TrainConfig(arch=tmp / "arch.json", from_scratch=True, epochs_dense=1, epochs_admm=1,
                      epochs_finetune=1, lr=0.1, rho=0.1, out=tmp / "run", quiet=True))
    return tmp / "run" / MODEL, arch


def test_export_writes_folded_masked_onnx_with_metadata(trained, tmp_path, capsys):
    checkpoint, arch = trained
    path = tmp_path / "model.onnx"
    assert main([str(checkpoint), "--onnx", str(path)]) == 0
    assert "predicted latency" in capsys.readouterr().out
    proto = onnx.load(path)
    ops = {n.op_type for n in proto.graph.node}
    assert "Conv" in ops and "BatchNormalization" not in ops
    meta = {p.key: p.value for p in proto.metadata_props}
    model, record = load_trained(checkpoint)
    assert json.loads(meta["jcw.arch"]) == arch.to_dict()
    assert json.loads(meta["jcw.accuracy"]) == pytest.approx(record["accuracy"])
    assert json.loads(meta["jcw.densities"]) == pytest.approx(record["densities"])
    predicted = json.loads(meta["jcw.predicted_ms"])
    assert {"a53", "a72"} <= set(predicted) and all(v > 0 for v in predicted.values())
    assert predicted["a53"] > predicted["a72"]  # the A53 is the slower core

    # zeros stored: every conv keeps exactly its mask's 4x1 blocks (folding scales whole output channels)
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    conv_weights = [inits[n.input[1]] for n in proto.graph.node if n.op_type == "Conv"]
    nonzero = sorted(int(np.count_nonzero(w)) for w in conv_weights)
    masked = dict(model.named_modules())
    expected = sorted(int(record["masks"][name].sum()) if name in record["masks"]
                      else int(np.count_nonzero(masked[name].weight.detach().numpy()))
                      for name, m in masked.items() if isinstance(m, torch.nn.Conv2d))
    assert nonzero == expected

    x = np.random.default_rng(0).standard_normal((1, 3, arch.resolution, arch.resolution), dtype=np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(Engine(str(path)).run(x), want, rtol=1e-4, atol=1e-4)


def test_export_usage_errors_exit_2(trained, tmp_path, capsys):
    checkpoint, _ = trained
    bad = tmp_path / "bad.pt"
    torch.save({"weights": torch.ones(2)}, bad)
    for argv, message in ([str(tmp_path / "missing.pt"), "--onnx", str(tmp_path / "m.onnx")], "no such file"), \
                         ([str(bad), "--onnx", str(tmp_path / "m.onnx")], "not a trained model"), \
                         ([str(checkpoint), "--onnx", str(tmp_path / "m.onnx"), "--devices", "z80"], "z80"):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not (tmp_path / "m.onnx").exists()
