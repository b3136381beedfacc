"""ONNX model -> a fused, topologically ordered list of executor steps (numpy + onnx only)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from jcw.core.errors import UsageError

# Activations the executor runs fused into a conv / linear / add epilogue or as an act step
# (kernels/include/ops.h): hardsigmoid takes alpha and beta, leaky_relu alpha.
ACTS = ("none", "relu", "relu6", "hardswish", "hardsigmoid", "sigmoid", "silu", "leaky_relu", "gelu", "gelu_tanh")
SUPPORTED_OPS = (
    "Conv", "BatchNormalization", "Gemm", "MatMul", "Add", "Mul", "Concat", "Relu", "Clip", "Sigmoid",
    "HardSigmoid", "HardSwish", "LeakyRelu", "Gelu", "GlobalAveragePool", "ReduceMean", "AveragePool", "MaxPool",
    "Flatten", "Reshape", "Identity", "Dropout", "Constant",
)


@dataclass
class Step:
    """One executor operation over named per-image activations (shapes exclude the batch)."""

    name: str
    op: str                       # conv | linear | maxpool | avgpool | avgpool2d | add | mul | concat | act | reshape
    inputs: list[str]
    output: str
    shape: tuple[int, ...]        # per-image output shape: (C, H, W) or (F,)
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    act: str = "none"             # one of ACTS
    act_alpha: float | None = None  # hardsigmoid alpha / leaky_relu alpha (None: the ONNX default)
    act_beta: float | None = None   # hardsigmoid beta
    kernel: int = 0
    stride: int = 1
    pad: int = 0
    groups: int = 1
    residual: str | None = None   # conv only: value added before the activation
    # avgpool2d: (kh, kw, sh, sw, pad_top, pad_left, pad_bottom, pad_right) and count_include_pad
    window: tuple[int, ...] | None = None
    count_include_pad: bool = True


@dataclass
class Graph:
    """The network as the executor sees it: one input, one output, steps in run order."""

    input_name: str
    input_shape: tuple[int, int, int]
    output_name: str
    steps: list[Step]

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Per-image shape of the network output."""
        if self.output_name == self.input_name:
            return self.input_shape
        return next(s.shape for s in self.steps if s.output == self.output_name)


def load_model(source) -> onnx.ModelProto:
    """Read an ONNX model from a path or accept a ModelProto; UsageError on anything else."""
    if isinstance(source, onnx.ModelProto):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise UsageError(f"expected a path to an .onnx file or an onnx.ModelProto, got {type(source).__name__}")
    path = Path(source)
    if not path.is_file():
        raise UsageError(f"no such ONNX file: {path}")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError / ValueError / OSError variants
        raise UsageError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})") from None


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _where(node: onnx.NodeProto) -> str:
    return f"{node.op_type} node '{node.name or node.output[0]}'"


class _Builder:
    """Translates ONNX nodes one by one into Steps, tracking constants and per-image shapes."""

    def __init__(self, model: onnx.ModelProto):
        self.graph = model.graph
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.alias: dict[str, str] = {}
        self.steps: list[Step] = []

    def value(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def const(self, node: onnx.NodeProto, idx: int, what: str) -> np.ndarray:
        if idx >= len(node.input) or not node.input[idx]:
            raise UsageError(f"{_where(node)}: missing {what}")
        name = node.input[idx]
        if name not in self.consts:
            raise UsageError(f"{_where(node)}: {what} must be a constant (initializer), got a computed tensor")
        return self.consts[name]

    def act_input(self, node: onnx.NodeProto, idx: int = 0) -> str:
        name = self.value(node.input[idx])
        if name not in self.shapes:
            raise UsageError(f"{_where(node)}: input '{node.input[idx]}' is neither the network input nor computed")
        return name

    def emit(self, node: onnx.NodeProto, op: str, inputs: list[str], shape: tuple[int, ...], **kw) -> None:
        out = node.output[0]
        self.steps.append(Step(name=node.name or out, op=op, inputs=inputs, output=out, shape=shape, **kw))
        self.shapes[out] = shape

    def input(self) -> tuple[str, tuple[int, int, int]]:
        inputs = [i for i in self.graph.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise UsageError(f"the engine runs models with exactly one input, this one has {len(inputs)}: "
                              f"{[i.name for i in inputs]}")
        inp = inputs[0]
        ttype = inp.type.tensor_type
        if ttype.elem_type != onnx.TensorProto.FLOAT:
            raise UsageError(f"input '{inp.name}' has element type "
                              f"{onnx.TensorProto.DataType.Name(ttype.elem_type)}; only float32 is supported")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim]
        if len(dims) != 4 or any(d is None or d < 1 for d in dims[1:]):
            raise UsageError(f"input '{inp.name}' must be NCHW with static C, H, W; declared shape "
                              f"{[d if d is not None else '?' for d in dims]}")
        shape = (dims[1], dims[2], dims[3])
        self.shapes[inp.name] = shape
        return inp.name, shape

    def node(self, node: onnx.NodeProto) -> None:
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            raise UsageError(f"unsupported op {node.domain}::{op} in {_where(node)}")
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            raise UsageError(f"unsupported op '{op}' in {_where(node)}; the engine supports "
                              f"{', '.join(SUPPORTED_OPS)}")
        handler(node, _attrs(node))

    # --- constants and aliases -------------------------------------------------------------

    def op_Constant(self, node, a):
        if "value" not in a:
            raise UsageError(f"{_where(node)}: only tensor-valued Constant nodes are supported")
        self.consts[node.output[0]] = numpy_helper.to_array(a["value"])

    def op_Identity(self, node, a):
        src = node.input[0]
        if src in self.consts:
            self.consts[node.output[0]] = self.consts[src]
        else:
            self.alias[node.output[0]] = self.act_input(node)

    op_Dropout = op_Identity

    # --- layers ----------------------------------------------------------------------------

    def op_Conv(self, node, a):
        x = self.act_input(node)
        if len(self.shapes[x]) != 3:
            raise UsageError(f"{_where(node)}: input must be a 4-D NCHW tensor")
        c, h, w = self.shapes[x]
        weight = self.const(node, 1, "weight").astype(np.float32)
        bias = self.const(node, 2, "bias").astype(np.float32) if len(node.input) > 2 and node.input[2] else None
        if weight.ndim != 4:
            raise UsageError(f"{_where(node)}: only 2-D convolution (4-D OIHW weight) is supported")
        out_ch, cin_g, kh, kw = weight.shape
        groups = int(a.get("group", 1))
        strides = list(a.get("strides", [1, 1]))
        dil = list(a.get("dilations", [1, 1]))
        pads = list(a.get("pads", [0, 0, 0, 0]))
        auto_pad = a.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if auto_pad == "VALID":
            pads = [0, 0, 0, 0]
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER") and kh == kw and kh % 2 == 1 and strides == [1, 1]:
            pads = [kh // 2] * 4
        elif auto_pad != "NOTSET":
            raise UsageError(f"{_where(node)}: auto_pad={auto_pad} is supported only with stride 1 and odd kernels")
        if dil != [1, 1]:
            raise UsageError(f"{_where(node)}: dilation {dil} not supported (only 1)")
        if strides[0] != strides[1] or len(set(pads)) != 1:
            raise UsageError(f"{_where(node)}: needs equal strides {strides} and symmetric equal pads {pads}")
        if groups < 1 or c % groups or out_ch % groups or cin_g * groups != c:
            raise UsageError(f"{_where(node)}: weight {list(weight.shape)} with group={groups} does not match "
                              f"{c} input channels")
        stride, pad = int(strides[0]), int(pads[0])
        oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
        if oh < 1 or ow < 1:
            raise UsageError(f"{_where(node)}: kernel {kh}x{kw} larger than the padded {h}x{w} input")
        if bias is not None and bias.shape != (out_ch,):
            raise UsageError(f"{_where(node)}: bias shape {bias.shape} != ({out_ch},)")
        self.emit(node, "conv", [x], (out_ch, oh, ow), weight=weight, bias=bias, kernel=kh,
                  stride=stride, pad=pad, groups=groups)

    def op_BatchNormalization(self, node, a):
        x = self.act_input(node)
        scale, shift, mean, var = (self.const(node, i, n).astype(np.float64)
                                   for i, n in ((1, "scale"), (2, "B"), (3, "mean"), (4, "var")))
        eps = float(a.get("epsilon", 1e-5))
        mul = scale / np.sqrt(var + eps)
        add = shift - mean * mul
        prod = self.producer(x)
        if prod is None or prod.op != "conv" or prod.act != "none" or self.uses(x) > 1:
            if len(self.shapes[x]) != 3 or mul.shape != (self.shapes[x][0],):
                raise UsageError(f"{_where(node)}: needs an NCHW input with {mul.shape[0]} channels")
            c = mul.shape[0]
            self.emit(node, "conv", [x], self.shapes[x], weight=mul.astype(np.float32).reshape(c, 1, 1, 1),
                      bias=add.astype(np.float32), kernel=1, groups=c)
            return
        if mul.shape != (prod.weight.shape[0],):
            raise UsageError(f"{_where(node)}: {mul.shape[0]} channels, conv has {prod.weight.shape[0]}")
        prod.weight = (prod.weight.astype(np.float64) * mul[:, None, None, None]).astype(np.float32)
        bias = prod.bias.astype(np.float64) if prod.bias is not None else np.zeros_like(mul)
        prod.bias = (bias * mul + add).astype(np.float32)
        self.rename(prod, node.output[0])

    def op_Gemm(self, node, a):
        x = self.act_input(node)
        w = self.const(node, 1, "B (weight)").astype(np.float32)
        if int(a.get("transA", 0)) or float(a.get("alpha", 1.0)) != 1.0 or float(a.get("beta", 1.0)) != 1.0:
            raise UsageError(f"{_where(node)}: only Gemm with transA=0, alpha=1, beta=1 is supported")
        weight = w if int(a.get("transB", 0)) else w.T
        bias = self.const(node, 2, "C (bias)").astype(np.float32) if len(node.input) > 2 and node.input[2] else None
        self.linear(node, x, weight, bias)

    def op_MatMul(self, node, a):
        x = self.act_input(node)
        w = self.const(node, 1, "weight")
        if w.ndim != 2:
            raise UsageError(f"{_where(node)}: only MatMul by a constant 2-D matrix is supported")
        self.linear(node, x, np.ascontiguousarray(w.T.astype(np.float32)), None)

    def linear(self, node, x, weight, bias):
        feats = int(np.prod(self.shapes[x]))
        if len(self.shapes[x]) != 1:
            raise UsageError(f"{_where(node)}: input must be 2-D (N, features); flatten it first")
        if weight.ndim != 2 or weight.shape[1] != feats:
            raise UsageError(f"{_where(node)}: weight {list(weight.shape)} does not match {feats} input features")
        if bias is not None:
            if bias.size != weight.shape[0]:
                raise UsageError(f"{_where(node)}: bias of {bias.size} values for {weight.shape[0]} outputs")
            bias = bias.reshape(-1)
        self.emit(node, "linear", [x], (weight.shape[0],), weight=np.ascontiguousarray(weight), bias=bias)

    def op_Add(self, node, a):
        names = list(node.input)
        const = [n for n in names if n in self.consts]
        if const:
            prod = self.producer(self.value(names[0] if names[1] in self.consts else names[1]))
            if len(const) == 1 and prod is not None and prod.op == "linear" and prod.bias is None \
                    and prod.act == "none" and self.uses(prod.output) == 1:
                b = self.consts[const[0]].astype(np.float32).reshape(-1)
                if b.size == prod.shape[0]:
                    prod.bias = b
                    self.rename(prod, node.output[0])
                    return
            raise UsageError(f"{_where(node)}: Add of a constant is supported only as the bias of a MatMul")
        x, y = self.act_input(node, 0), self.act_input(node, 1)
        if self.shapes[x] != self.shapes[y]:
            raise UsageError(f"{_where(node)}: broadcasting Add not supported ({self.shapes[x]} + {self.shapes[y]})")
        self.emit(node, "add", [x, y], self.shapes[x])

    def op_Relu(self, node, a):
        self.activation(node, "relu")

    def op_Clip(self, node, a):
        lo = a.get("min")
        hi = a.get("max")
        if len(node.input) > 1 and node.input[1]:
            lo = float(self.const(node, 1, "min"))
        if len(node.input) > 2 and node.input[2]:
            hi = float(self.const(node, 2, "max"))
        if lo == 0.0 and hi == 6.0:
            self.activation(node, "relu6")
        elif lo == 0.0 and (hi is None or np.isinf(hi)):
            self.activation(node, "relu")
        else:
            raise UsageError(f"{_where(node)}: Clip(min={lo}, max={hi}) not supported; only ReLU (min 0) "
                              f"and ReLU6 (min 0, max 6)")

    def activation(self, node, act, alpha=None, beta=None):
        x = self.act_input(node)
        self.emit(node, "act", [x], self.shapes[x], act=act, act_alpha=alpha, act_beta=beta)

    def op_Sigmoid(self, node, a):
        self.activation(node, "sigmoid")

    def op_HardSigmoid(self, node, a):
        self.activation(node, "hardsigmoid", float(a.get("alpha", 0.2)), float(a.get("beta", 0.5)))

    def op_HardSwish(self, node, a):
        self.activation(node, "hardswish")

    def op_LeakyRelu(self, node, a):
        self.activation(node, "leaky_relu", float(a.get("alpha", 0.01)))

    def op_Gelu(self, node, a):
        approx = a.get("approximate", b"none")
        approx = approx.decode() if isinstance(approx, bytes) else approx
        if approx not in ("none", "tanh"):
            raise UsageError(f"{_where(node)}: Gelu approximate={approx!r} not supported (only 'none' and 'tanh')")
        self.activation(node, "gelu" if approx == "none" else "gelu_tanh")

    def op_Mul(self, node, a):
        """SiLU as exported (x * Sigmoid(x)) -> one silu activation; equal shapes -> elementwise mul;
        (N, C, H, W) * (N, C, 1, 1) -> the per-channel scale of squeeze-excitation."""
        if any(n in self.consts for n in node.input):
            raise UsageError(f"{_where(node)}: Mul by a constant is not supported; only the product of two "
                              f"computed tensors (equal shapes, or (N, C, H, W) * (N, C, 1, 1))")
        x, y = self.act_input(node, 0), self.act_input(node, 1)
        for v, other in ((x, y), (y, x)):
            gate = self.producer(v)
            if gate is not None and gate.op == "act" and gate.act == "sigmoid" and gate.inputs == [other] \
                    and self.uses(v) == 1:
                self.steps.remove(gate)
                self.emit(node, "act", [other], self.shapes[other], act="silu")
                return
        sx, sy = self.shapes[x], self.shapes[y]
        if sx == sy:
            self.emit(node, "mul", [x, y], sx)
            return
        if len(sy) == 3 and sy[1:] == (1, 1) and len(sx) == 3 and sx[0] == sy[0]:
            self.emit(node, "mul", [x, y], sx)
            return
        if len(sx) == 3 and sx[1:] == (1, 1) and len(sy) == 3 and sx[0] == sy[0]:
            self.emit(node, "mul", [y, x], sy)
            return
        raise UsageError(f"{_where(node)}: broadcasting Mul of {sx} and {sy} (per image) not supported; only "
                          f"equal shapes or (N, C, H, W) * (N, C, 1, 1)")

    def op_Concat(self, node, a):
        xs = [self.act_input(node, i) for i in range(len(node.input))]
        if any(n in self.consts for n in node.input):
            raise UsageError(f"{_where(node)}: Concat of constants is not supported")
        shapes = [self.shapes[v] for v in xs]
        rank = len(shapes[0]) + 1
        axis = int(a.get("axis", 1))
        if axis < 0:
            axis += rank
        if axis != 1 or any(len(s) != rank - 1 for s in shapes) or len({s[1:] for s in shapes}) != 1:
            raise UsageError(f"{_where(node)}: Concat supported only along channels (axis 1) of inputs with "
                              f"equal other dims, got axis {a.get('axis')} and per-image shapes {shapes}")
        self.emit(node, "concat", xs, (sum(s[0] for s in shapes),) + shapes[0][1:])

    def op_GlobalAveragePool(self, node, a):
        x = self.act_input(node)
        if len(self.shapes[x]) != 3:
            raise UsageError(f"{_where(node)}: input must be 4-D NCHW")
        self.emit(node, "avgpool", [x], (self.shapes[x][0], 1, 1))

    def op_ReduceMean(self, node, a):
        x = self.act_input(node)
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.const(node, 1, "axes").tolist()
        rank = len(self.shapes[x]) + 1
        axes = sorted(int(ax) % rank for ax in (axes or []))
        if rank != 4 or axes != [2, 3]:
            raise UsageError(f"{_where(node)}: ReduceMean supported only over the spatial axes (2, 3) of NCHW")
        c = self.shapes[x][0]
        self.emit(node, "avgpool", [x], (c, 1, 1) if int(a.get("keepdims", 1)) else (c,))

    def op_MaxPool(self, node, a):
        x = self.act_input(node)
        k = list(a.get("kernel_shape", []))
        strides = list(a.get("strides", [1, 1]))
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if (len(k) != 2 or k[0] != k[1] or strides[0] != strides[1] or len(set(pads)) != 1
                or int(a.get("ceil_mode", 0)) or list(a.get("dilations", [1, 1])) != [1, 1]
                or len(node.output) > 1 and node.output[1]):
            raise UsageError(f"{_where(node)}: only square MaxPool with equal strides, symmetric pads, "
                              f"ceil_mode=0, no dilation and no indices output is supported")
        c, h, w = self.shapes[x]
        kk, s, p = int(k[0]), int(strides[0]), int(pads[0])
        oh, ow = (h + 2 * p - kk) // s + 1, (w + 2 * p - kk) // s + 1
        if oh < 1 or ow < 1 or p * 2 > kk:
            raise UsageError(f"{_where(node)}: MaxPool {kk}x{kk} pad {p} does not fit the {h}x{w} input")
        self.emit(node, "maxpool", [x], (c, oh, ow), kernel=kk, stride=s, pad=p)

    def op_AveragePool(self, node, a):
        x = self.act_input(node)
        k = [int(v) for v in a.get("kernel_shape", [])]
        strides = [int(v) for v in a.get("strides", [1, 1])]
        pads = [int(v) for v in a.get("pads", [0, 0, 0, 0])]
        auto_pad = a.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if (len(k) != 2 or len(strides) != 2 or len(pads) != 4 or int(a.get("ceil_mode", 0))
                or list(a.get("dilations", [1, 1])) != [1, 1] or auto_pad not in ("NOTSET", "VALID")
                or len(self.shapes[x]) != 3):
            raise UsageError(f"{_where(node)}: only 2-D AveragePool on NCHW with ceil_mode=0, no dilation and "
                              f"explicit pads is supported")
        if auto_pad == "VALID":
            pads = [0, 0, 0, 0]
        c, h, w = self.shapes[x]
        (kh, kw), (sh, sw), (pt, pl, pb, pr) = k, strides, pads
        if min(kh, kw, sh, sw) < 1 or min(pads) < 0 or max(pt, pb) >= kh or max(pl, pr) >= kw \
                or h + pt + pb < kh or w + pl + pr < kw:
            raise UsageError(f"{_where(node)}: AveragePool kernel {k} stride {strides} pads {pads} does not fit "
                              f"the {h}x{w} input (pads must be smaller than the kernel)")
        oh, ow = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
        self.emit(node, "avgpool2d", [x], (c, oh, ow), window=(kh, kw, sh, sw, pt, pl, pb, pr),
                  count_include_pad=bool(int(a.get("count_include_pad", 0))))

    def op_Flatten(self, node, a):
        x = self.act_input(node)
        if int(a.get("axis", 1)) != 1:
            raise UsageError(f"{_where(node)}: only Flatten(axis=1) is supported")
        self.reshape(node, x, (int(np.prod(self.shapes[x])),))

    def op_Reshape(self, node, a):
        x = self.act_input(node)
        target = [int(v) for v in self.const(node, 1, "shape").reshape(-1)]
        feats = int(np.prod(self.shapes[x]))
        rest = target[1:]
        if rest.count(-1) == 1 and target[0] != -1:
            known = int(np.prod([d for d in rest if d != -1]))
            rest = [feats // known if d == -1 else d for d in rest] if known > 0 and feats % known == 0 else []
        if len(target) not in (2, 4) or any(d < 1 for d in rest) or int(np.prod(rest)) != feats:
            raise UsageError(f"{_where(node)}: Reshape to {target} must keep the batch axis and give "
                              f"(N, {feats}) or (N, C, H, W) with C*H*W = {feats}")
        self.reshape(node, x, tuple(rest))

    def reshape(self, node, x, shape):
        self.emit(node, "reshape", [x], shape)

    # --- helpers for fusion at build time -------------------------------------------------

    def producer(self, value: str) -> Step | None:
        return next((s for s in reversed(self.steps) if s.output == value), None)

    def uses(self, value: str) -> int:
        graph_outs = sum(self.value(o.name) == value for o in self.graph.output)
        node_uses = sum(self.value(i) == value for n in self.graph.node
                        if n.op_type not in ("Identity", "Dropout") for i in n.input)
        return node_uses + graph_outs

    def rename(self, step: Step, new: str) -> None:
        self.shapes[new] = self.shapes[step.output]
        step.output = new


def _fuse(steps: list[Step], output: str) -> list[Step]:
    """Fuse residual adds and activations (every one of ACTS) into the producing conv/linear/add where the
    graph allows."""
    def consumers(value):
        n = sum(value in s.inputs or s.residual == value for s in steps)
        return n + (value == output)

    changed = True
    while changed:
        changed = False
        for i, add in enumerate(steps):
            if add.op != "add":
                continue
            pos = {s.output: j for j, s in enumerate(steps)}
            cands = [v for v in add.inputs if v in pos and steps[pos[v]].op == "conv"
                     and steps[pos[v]].act == "none" and steps[pos[v]].residual is None
                     and consumers(v) == 1 and add.inputs[0] != add.inputs[1]]
            if not cands:
                continue
            conv_name = max(cands, key=lambda v: pos[v])
            conv = steps[pos[conv_name]]
            conv.residual = add.inputs[1] if add.inputs[0] == conv_name else add.inputs[0]
            conv.output, conv.shape = add.output, add.shape
            steps[i] = conv
            del steps[pos[conv_name]]
            changed = True
            break
    out = []
    for s in steps:
        if s.op == "act":
            prod = next((p for p in reversed(out) if p.output == s.inputs[0]), None)
            if prod is not None and prod.op in ("conv", "linear", "add") and prod.act == "none" \
                    and consumers(prod.output) == 1:
                prod.act, prod.act_alpha, prod.act_beta = s.act, s.act_alpha, s.act_beta
                prod.output = s.output
                continue
        out.append(s)
    return out


def build_graph(model: onnx.ModelProto) -> Graph:
    """Translate an ONNX model into the executor's step list, with BN folded and epilogues fused."""
    b = _Builder(model)
    input_name, input_shape = b.input()
    for node in model.graph.node:
        b.node(node)
    if len(model.graph.output) != 1:
        raise UsageError(f"the engine runs models with exactly one output, this one has {len(model.graph.output)}")
    out = b.value(model.graph.output[0].name)
    if out not in b.shapes:
        raise UsageError(f"output '{model.graph.output[0].name}' is not computed from the input")
    steps = _fuse(b.steps, out)
    seen: dict[str, int] = {}
    for s in steps:
        s.inputs = [b.value(v) for v in s.inputs]
        seen[s.name] = seen.get(s.name, 0) + 1
        if seen[s.name] > 1:
            s.name = f"{s.name}#{seen[s.name]}"
    return Graph(input_name=input_name, input_shape=input_shape, output_name=out, steps=steps)
