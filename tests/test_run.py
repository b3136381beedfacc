"""python -m jcw.run: output summary, --bench, --compare-ort, --input, predicted latency, exit codes and messages."""

import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn


def run_cli(*args):
    return subprocess.run([sys.executable, "-P", "-m", "jcw.run", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A small classifier (conv-bn-relu6, residual block, pool, fc) exported by torch, with a predicted latency."""
    g = torch.Generator().manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 12, 3, 2, 1, bias=False), nn.BatchNorm2d(12), nn.ReLU6())
            self.conv = nn.Sequential(nn.Conv2d(12, 12, 3, 1, 1, bias=False), nn.BatchNorm2d(12))
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 10))

        def forward(self, x):
            x = self.stem(x)
            return self.head(torch.relu(self.conv(x) + x))

    net = Net().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    path = tmp_path_factory.mktemp("run") / "net.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 20, 20),), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, dynamo=False)
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"jcw.predicted_ms": json.dumps({"host": 0.5, "a72": 3.0}),
                                        "jcw.predicted_threads": json.dumps({"host": 1, "a72": 4})})
    onnx.save(model, str(path))
    return path


def test_prints_output_summary_and_top5_of_the_input_file(model_path, tmp_path):
    x = np.random.default_rng(1).standard_normal((3, 20, 20)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    res = run_cli(model_path, "--input", tmp_path / "x.npy")
    assert res.returncode == 0, res.stderr
    assert "shape (1, 10)" in res.stdout
    logits = ort.InferenceSession(str(model_path)).run(None, {"input": x[None]})[0][0]
    top = res.stdout.split("top-5")[1].split()
    assert top[2].rstrip(":") == str(int(np.argmax(logits)))


def test_bench_and_compare_ort(model_path):
    res = run_cli(model_path, "--bench", "--compare-ort", "--repeats", 5, "--warmup", 1, "--batch", 2, "--threads", 2)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "shape (2, 10)" in out and "median" in out and "p10" in out and "p90" in out
    assert "outputs agree" in out and "speedup" in out
    assert "predicted (host) 0.500 ms" in out


def test_predicted_latency_for_another_device(model_path):
    out = run_cli(model_path, "--bench", "--repeats", 2, "--device", "a72").stdout
    assert "predicted (a72) 3.000 ms" in out and "the prediction is for 4 threads" in out
    res = run_cli(model_path, "--bench", "--repeats", 2, "--device", "a53")
    assert res.returncode == 0 and "no prediction for device 'a53'" in res.stdout


def test_plan_flag_lists_layers(model_path):
    res = run_cli(model_path, "--plan", "--mode", "sparse")
    assert res.returncode == 0, res.stderr
    assert "sparse" in res.stdout and "relu6" in res.stdout and "yes" in res.stdout


@pytest.mark.parametrize("args,message", [
    (["missing.onnx"], "no such ONNX file"),
    (["__NOT_ONNX__"], "not a readable ONNX model"),
    (["__MODEL__", "--threads", "0"], "--threads must be >= 1"),
    (["__MODEL__", "--mode", "fast"], "invalid choice"),
    (["__MODEL__", "--input", "__BAD_NPY__"], "input shape must be (N, 3, 20, 20)"),
    (["__MODEL__", "--input", "__TEXT__"], "cannot read --input"),
    (["__UNSUPPORTED__"], "unsupported op 'Tanh'"),
])
def test_user_errors_exit_2_with_a_message(model_path, tmp_path, args, message):
    (tmp_path / "bad.onnx").write_text("this is not a protobuf")
    np.save(tmp_path / "bad.npy", np.zeros((1, 3, 8, 8), np.float32))
    (tmp_path / "text.npy").write_text("hello")
    sig = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Tanh", ["x"], ["y"], name="gate")], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 4, 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 4, 4])]))
    onnx.save(sig, str(tmp_path / "sig.onnx"))
    subst = {"__MODEL__": model_path, "__NOT_ONNX__": tmp_path / "bad.onnx", "__BAD_NPY__": tmp_path / "bad.npy",
             "__TEXT__": tmp_path / "text.npy", "__UNSUPPORTED__": tmp_path / "sig.onnx",
             "missing.onnx": tmp_path / "missing.onnx"}
    res = run_cli(*[subst.get(a, a) for a in args])
    assert res.returncode == 2
    assert message in res.stderr
    assert "Traceback" not in res.stderr


def test_runs_from_the_repository_root(model_path):
    """`python -m jcw.run` started in a source checkout (which shadows the installed package) still
    finds the compiled kernels of the installed copy."""
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-m", "jcw.run", str(model_path), "--repeats", "2"],
                         capture_output=True, text=True, cwd=root)
    assert res.returncode == 0, res.stderr
    assert "output" in res.stdout.lower()
