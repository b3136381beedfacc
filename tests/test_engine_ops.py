"""jcw.engine on the ONNX ops of modern CNNs, as torch's exporter emits them (jcw.export.export_onnx):
HardSwish, HardSigmoid, Sigmoid, SiLU (Sigmoid + Mul), LeakyRelu, Gelu, Concat, Mul (elementwise and the
squeeze-excitation scale), AveragePool, ReduceMean. Engine vs onnxruntime on the same file."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from jcw.core.errors import UsageError
from jcw.engine import Engine
from jcw.export import ENGINE_OPS, export_onnx

RES = 12


def prune_4x1(conv: nn.Conv2d, density: float, seed: int) -> nn.Conv2d:
    """Zero random 4x1 blocks (4 consecutive output channels at one (in_ch, kh, kw)) of a conv, in place."""
    w = conv.weight.data
    out_ch, positions = w.shape[0], int(np.prod(w.shape[1:]))
    keep = torch.rand(-(-out_ch // 4), positions, generator=torch.Generator().manual_seed(seed)) < density
    w.mul_(keep.repeat_interleave(4, dim=0)[:out_ch].reshape(w.shape))
    return conv


def perturb_batchnorm(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BatchNorm statistics (folded into the convs at export / load)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                for t, lo, hi in ((m.weight, 0.5, 1.5), (m.bias, -0.2, 0.2), (m.running_mean, -0.2, 0.2),
                                  (m.running_var, 0.5, 2.0)):
                    t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
    return model


def export(model: nn.Module, tmp_path, name: str) -> onnx.ModelProto:
    torch.manual_seed(0)
    return onnx.load(str(export_onnx(model.eval(), tmp_path / f"{name}.onnx", RES)))


def ort_run(proto: onnx.ModelProto, x: np.ndarray, threads: int = 1) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def check_parity(proto: onnx.ModelProto, threads: int = 1, modes=("auto", "dense"), seed: int = 0) -> Engine:
    """Engine (each mode) vs onnxruntime on a seeded random batch of 2: max error <= 1e-4 of the largest output."""
    ops = {n.op_type for n in proto.graph.node}
    assert ops <= ENGINE_OPS, ops - ENGINE_OPS
    x = np.random.default_rng(seed).standard_normal((2, 3, RES, RES), dtype=np.float32)
    want = ort_run(proto, x, threads)
    for mode in modes:
        engine = Engine(proto, threads=threads, mode=mode)
        got = engine.run(x)
        assert got.shape == want.shape
        rel = float(np.abs(got - want).max()) / float(np.abs(want).max())
        assert rel <= 1e-4, (mode, rel)
    return Engine(proto, threads=threads)


def onnx_ops(proto):
    return [n.op_type for n in proto.graph.node]


class ActChain(nn.Module):
    """conv + activation, seven times: every activation the exporter emits as its own op(s)."""

    ACTS = [(nn.Hardswish(), "hardswish"), (nn.Hardsigmoid(), "hardsigmoid"), (nn.Sigmoid(), "sigmoid"),
            (nn.SiLU(), "silu"), (nn.LeakyReLU(0.1), "leaky_relu"), (nn.GELU(), "gelu"),
            (nn.GELU(approximate="tanh"), "gelu_tanh")]

    def __init__(self):
        super().__init__()
        chans = [3, 8, 12, 8, 16, 8, 12, 8]
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3 if i % 2 == 0 else 1, padding=1 - i % 2)
                                   for i in range(7))
        for i, conv in enumerate(self.convs):
            if i % 2 == 1:
                prune_4x1(conv, 0.4, seed=i)
        self.acts = nn.ModuleList(a for a, _ in self.ACTS)

    def forward(self, x):
        for conv, act in zip(self.convs, self.acts):
            x = act(conv(x))
        return x


def test_activations_fuse_into_conv_epilogues(tmp_path):
    proto = export(ActChain(), tmp_path, "acts")
    ops = onnx_ops(proto)
    # What the exporter emits: SiLU decomposed, the others as their ONNX ops.
    for op in ("HardSwish", "HardSigmoid", "LeakyRelu", "Gelu"):
        assert op in ops
    assert ops.count("Sigmoid") == 2 and ops.count("Mul") == 1
    engine = check_parity(proto)
    assert [(p.op, p.act) for p in engine.plan] == [("conv", a) for _, a in ActChain.ACTS]
    assert [p.kernel for p in engine.plan] == ["dense", "sparse"] * 3 + ["dense"]


class ConcatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = prune_4x1(nn.Conv2d(3, 8, 1), 0.5, seed=1)
        self.b = nn.Conv2d(3, 4, 3, padding=1)
        self.c = nn.Conv2d(24, 8, 3, padding=1)

    def forward(self, x):
        y = torch.cat([self.a(x), torch.relu(self.b(x))], 1)
        return self.c(torch.cat([y, nn.functional.hardswish(y)], 1))


def test_concat_producers_write_into_slices(tmp_path):
    proto = export(ConcatNet(), tmp_path, "concat")
    assert onnx_ops(proto).count("Concat") == 2
    engine = check_parity(proto)
    plan = [(p.op, p.act, p.copied) for p in engine.plan]
    # the first concat's producers write into it; y feeds the second concat and the hardswish, so it is copied
    assert plan == [("conv", "none", 0), ("conv", "relu", 0), ("concat", "none", 0), ("act", "hardswish", 0),
                    ("concat", "none", 1), ("conv", "none", 0)]
    assert engine.plan[0].kernel == "sparse"


class MulNet(nn.Module):
    """Two feature maps multiplied; a Sigmoid gate of another tensor (not SiLU); an activation that cannot fuse."""

    def __init__(self):
        super().__init__()
        self.a = prune_4x1(nn.Conv2d(3, 8, 3, padding=1), 0.5, seed=2)
        self.b = nn.Conv2d(3, 8, 1)

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        return torch.sigmoid(a) * b * nn.functional.leaky_relu(a, 0.2)


def test_elementwise_mul_and_sigmoid_gate(tmp_path):
    proto = export(MulNet(), tmp_path, "mul")
    engine = check_parity(proto)
    assert [(p.op, p.act) for p in engine.plan] == [
        ("conv", "none"), ("conv", "none"), ("act", "sigmoid"), ("mul", "none"), ("act", "leaky_relu"), ("mul", "none")]


class SENet(nn.Module):
    """Squeeze-excitation with a Sigmoid gate, the squeeze as x.mean((2, 3), keepdim=True) (ReduceMean)."""

    def __init__(self):
        super().__init__()
        self.conv = prune_4x1(nn.Conv2d(3, 16, 3, padding=1), 0.5, seed=3)
        self.fc1, self.fc2 = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(y.mean((2, 3), keepdim=True)))))
        return y * s


def test_squeeze_excitation_scale(tmp_path):
    proto = export(SENet(), tmp_path, "se")
    assert {"ReduceMean", "Sigmoid", "Mul"} <= set(onnx_ops(proto))
    engine = check_parity(proto)
    assert [(p.op, p.act) for p in engine.plan] == [
        ("conv", "relu"), ("avgpool", "none"), ("conv", "relu"), ("conv", "sigmoid"), ("scale", "none")]


class PoolNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = prune_4x1(nn.Conv2d(8, 8, 1), 0.5, seed=4)
        self.p1 = nn.AvgPool2d(3, stride=1, padding=1)                           # count_include_pad=True
        self.p2 = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.p3 = nn.AvgPool2d(2)

    def forward(self, x):
        y = self.c2(self.p1(torch.relu(self.c1(x))))
        return self.p3(self.p2(y)).mean((2, 3), keepdim=True)


def test_average_pools_and_reducemean(tmp_path):
    proto = export(PoolNet(), tmp_path, "pool")
    ops = onnx_ops(proto)
    assert ops.count("AveragePool") == 3 and "ReduceMean" in ops
    engine = check_parity(proto)
    assert [p.op for p in engine.plan] == ["conv", "avgpool2d", "conv", "avgpool2d", "avgpool2d", "avgpool"]
    assert engine.output_shape == (8, 1, 1)


class ModernNet(nn.Module):
    """Stem with hardswish; two branches concatenated (relu / SiLU); a squeeze-excitation block
    (avgpool -> conv1x1+bias -> relu -> conv1x1+bias -> hardsigmoid -> mul); a depthwise conv with
    hardswish; a residual add followed by hardswish; an average pool; SiLU; a linear head."""

    def __init__(self):
        super().__init__()
        bn = nn.BatchNorm2d
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), bn(16), nn.Hardswish())
        self.a = nn.Sequential(prune_4x1(nn.Conv2d(16, 8, 1, bias=False), 0.4, 5), bn(8), nn.ReLU())
        self.b = nn.Sequential(prune_4x1(nn.Conv2d(16, 8, 3, padding=1, bias=False), 0.3, 6), bn(8), nn.SiLU())
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 8, 1), nn.ReLU(), nn.Conv2d(8, 16, 1),
                                nn.Hardsigmoid())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), bn(16), nn.Hardswish())
        self.proj = nn.Sequential(prune_4x1(nn.Conv2d(16, 16, 1, bias=False), 0.5, 7), bn(16))
        self.pool = nn.AvgPool2d(2)
        self.expand = nn.Sequential(prune_4x1(nn.Conv2d(16, 24, 1), 0.5, 8), nn.SiLU())
        self.head = nn.Linear(24, 10)

    def forward(self, x):
        s = self.stem(x)
        c = torch.cat([self.a(s), self.b(s)], 1)
        c = c * self.se(c)
        y = nn.functional.hardswish(self.proj(self.dw(c)) + s)
        y = self.expand(self.pool(y))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


@pytest.fixture(scope="module")
def modern_proto(tmp_path_factory):
    model = perturb_batchnorm(ModernNet(), seed=9)
    return export(model, tmp_path_factory.mktemp("modern"), "modern")


@pytest.mark.parametrize("threads", [1, 2])
def test_modern_network_matches_onnxruntime(modern_proto, threads):
    engine = check_parity(modern_proto, threads=threads, modes=("auto",), seed=threads)
    plan = [(p.op, p.act, p.residual) for p in engine.plan]
    assert plan == [
        ("conv", "hardswish", False), ("conv", "relu", False), ("conv", "silu", False), ("concat", "none", False),
        ("avgpool", "none", False), ("conv", "relu", False), ("conv", "hardsigmoid", False),
        ("scale", "none", False), ("depthwise", "hardswish", False), ("conv", "hardswish", True),
        ("avgpool2d", "none", False), ("conv", "silu", False), ("avgpool", "none", False),
        ("reshape", "none", False), ("linear", "none", False)]
    concat = next(p for p in engine.plan if p.op == "concat")
    assert concat.copied == 0
    assert sum(p.kernel == "sparse" for p in engine.plan) == 4


def test_unsupported_op_names_the_op_the_node_and_the_supported_ops(tmp_path):
    class TanhNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return torch.tanh(self.conv(x))

    proto = export(TanhNet(), tmp_path, "tanh")
    node = next(n for n in proto.graph.node if n.op_type == "Tanh")
    with pytest.raises(UsageError) as err:
        Engine(proto)
    msg = str(err.value)
    assert "unsupported op 'Tanh'" in msg and (node.name or node.output[0]) in msg
    assert "HardSwish" in msg and "Concat" in msg and "AveragePool" in msg


def _model(nodes, inits, in_shape=(4, 6, 6)):
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


@pytest.mark.parametrize("node,inits,match", [
    (helper.make_node("AveragePool", ["x"], ["y"], name="p", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), {},
     r"AveragePool node 'p'.*ceil_mode=0"),
    (helper.make_node("Mul", ["x", "k"], ["y"], name="m"), {"k": np.float32(2.0)}, r"Mul node 'm'.*constant"),
    (helper.make_node("Concat", ["x", "x"], ["y"], name="c", axis=2), {}, r"Concat node 'c'.*axis 1"),
    (helper.make_node("Gelu", ["x"], ["y"], name="g", approximate="erf"), {}, r"Gelu node 'g'.*approximate"),
])
def test_unsupported_forms_are_named(node, inits, match):
    with pytest.raises(UsageError, match=match):
        Engine(_model([node], inits))


def test_broadcast_mul_other_than_the_channel_scale_is_refused():
    w = np.ones((2, 4, 1, 1), np.float32)
    model = _model([helper.make_node("GlobalAveragePool", ["x"], ["g"], name="gap"),
                    helper.make_node("Conv", ["g", "w"], ["s"], name="fc"),
                    helper.make_node("Mul", ["x", "s"], ["y"], name="gate")], {"w": w})
    with pytest.raises(UsageError, match=r"Mul node 'gate'.*\(4, 6, 6\) and \(2, 1, 1\)"):
        Engine(model)


@pytest.mark.parametrize("mode", ["auto", "sparse", "dense"])
def test_hardsigmoid_and_leaky_relu_keep_their_parameters(mode):
    """Parameters other than torch's defaults reach the fused epilogue (ONNX graph written by hand)."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    w[:4, 1] = 0  # a zero 4x1 block row span
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("HardSigmoid", ["c"], ["h"], name="hs", alpha=0.3, beta=0.4),
             helper.make_node("LeakyRelu", ["h"], ["y"], name="lr", alpha=0.05)]
    model = _model(nodes, {"w": w})
    x = rng.standard_normal((2, 4, 6, 6), dtype=np.float32) * 3
    engine = Engine(model, mode=mode)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    assert float(np.abs(engine.run(x) - want).max()) <= 1e-4 * float(np.abs(want).max())
    assert [(p.op, p.act) for p in engine.plan] == [("conv", "hardsigmoid"), ("act", "leaky_relu")]


@pytest.mark.parametrize("threads", [1, 2])
def test_activations_fuse_into_add_and_linear_steps(threads):
    rng = np.random.default_rng(4)
    fc = rng.standard_normal((5, 4)).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Add", ["x", "r"], ["s"], name="add"),
             helper.make_node("HardSwish", ["s"], ["h"], name="hswish"),
             helper.make_node("GlobalAveragePool", ["h"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fc"], ["z"], name="fc", transB=1),
             helper.make_node("Sigmoid", ["z"], ["y"], name="gate")]
    model = _model(nodes, {"fc": fc})
    x = rng.standard_normal((2, 4, 6, 6), dtype=np.float32) * 3
    engine = Engine(model, threads=threads)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert float(np.abs(engine.run(x) - want).max()) <= 1e-4 * float(np.abs(want).max())
    assert [(p.op, p.act) for p in engine.plan] == [
        ("act", "relu"), ("add", "hardswish"), ("avgpool", "none"), ("reshape", "none"), ("linear", "sigmoid")]


def test_grouped_conv_runs_as_the_full_channel_matrix(tmp_path):
    """A ResNeXt-style grouped 3x3 (4 groups, one sparse 4x1-pruned) beside 1x1 convs: parity with onnxruntime."""
    class NeXt(nn.Module):
        def __init__(self):
            super().__init__()
            self.reduce = nn.Conv2d(3, 32, 1)
            self.grouped = prune_4x1(nn.Conv2d(32, 32, 3, padding=1, groups=4), 0.5, seed=3)
            self.expand = nn.Conv2d(32, 8, 1)

        def forward(self, x):
            return self.expand(torch.relu(self.grouped(torch.relu(self.reduce(x)))))

    proto = export(NeXt().eval(), tmp_path, "next")
    assert any(n.op_type == "Conv" and any(a.name == "group" and a.i == 4 for a in n.attribute) for n in proto.graph.node)
    check_parity(proto)
