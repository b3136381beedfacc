"""Derive a model's NetSpec (prunable layers, coupling groups, ops) from a torch.fx trace."""

from __future__ import annotations

import argparse
import operator
from collections import Counter
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from jcw.core.errors import UsageError
from jcw.core.util import atomic_write
from jcw.core.netspec import CONCAT, IMAGE, SPEC_DIR, GroupSpec, LayerSpec, NetSpec, OpSpec

# What the graph reader knows.  Activations (module types, functions, methods) by their NetSpec name.
_ACT_MODULES = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid",
                nn.Sigmoid: "sigmoid", nn.SiLU: "silu", nn.GELU: "gelu", nn.LeakyReLU: "leaky_relu"}
_F = nn.functional
_ACT_FUNCTIONS = {torch.relu: "relu", _F.relu: "relu", _F.relu6: "relu6", _F.hardswish: "hardswish",
                  _F.hardsigmoid: "hardsigmoid", torch.sigmoid: "sigmoid", _F.sigmoid: "sigmoid", _F.silu: "silu",
                  _F.gelu: "gelu", _F.leaky_relu: "leaky_relu", torch.relu_: "relu"}
_ACT_METHODS = {"relu": "relu", "relu_": "relu", "sigmoid": "sigmoid", "sigmoid_": "sigmoid"}
# Modules, functions and methods that leave channels and values' layout alone (identity at inference).
_PASS_MODULES = (nn.Dropout, nn.Identity)
_PASS_FUNCTIONS = {_F.dropout, torch.clone}
_PASS_METHODS = {"contiguous", "clone"}
_DROP_PATH = ("StochasticDepth", "DropPath")  # per-sample residual-branch dropout: identity at inference
_FLATTEN_FUNCTIONS = {torch.flatten}
_FLATTEN_METHODS = {"flatten", "view", "reshape", "squeeze"}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_"}
_MUL_FUNCTIONS = {operator.mul, operator.imul, torch.mul}
_MUL_METHODS = {"mul", "mul_"}
_CAT_FUNCTIONS = {torch.cat, torch.concat}
_MEAN = ({torch.mean}, {"mean"})
# Ops between a conv (or add) and its activation that leave values the activation sees alone.
_TRANSPARENT = (nn.BatchNorm2d, nn.Dropout, nn.Identity)
_IMAGE = IMAGE  # channels never pruned: the image, and anything computed by an op jcw cannot follow
_FC = -2
SUPPORTED = ("convs (square, plain or depthwise) with BatchNorm; activations ReLU, ReLU6, Hardswish, Hardsigmoid, "
             "Sigmoid, SiLU, GELU, LeakyReLU (modules or functions); grouped convs (kept whole); residual adds; "
             "concatenation along "
             "channels; channel-wise multiplies (squeeze-excitation); max, average and adaptive average pooling; "
             "Linear layers (hidden ones pruned like convs), Flatten, Dropout, Identity, stochastic depth; other ops "
             "keep the channels they touch at full width")


class _UnionFind:
    """Disjoint sets over integer ids with a ``residual`` flag per set."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.residual: list[bool] = []

    def new(self) -> int:
        self.parent.append(len(self.parent))
        self.residual.append(False)
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int, residual: bool = True) -> int:
        ra, rb = self.find(a), self.find(b)
        root = min(ra, rb)
        self.parent[max(ra, rb)] = root
        self.residual[root] = self.residual[ra] or self.residual[rb] or residual
        return root


class _Tracer(fx.Tracer):
    """torch.fx tracer that keeps stochastic-depth modules (identity at inference) as single nodes."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m).__name__ in _DROP_PATH or super().is_leaf_module(m, qualname)


def _graph_module(model: nn.Module) -> fx.GraphModule:
    return fx.GraphModule(model, _Tracer().trace(model))


@dataclass
class Trace:
    """A model's NetSpec plus the BatchNorm module following each conv (for weight surgery)."""

    spec: NetSpec
    norms: dict[str, str] = field(default_factory=dict)


def _shape(node: fx.Node) -> torch.Size | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return getattr(meta, "shape", None)


def _depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def _conv_kind(conv: nn.Conv2d, first: bool) -> str:
    if first:
        return "stem"
    if _depthwise(conv):
        return "depthwise"
    return "pointwise" if conv.kernel_size == (1, 1) else "regular"


def _check_conv(name: str, conv: nn.Conv2d) -> None:
    k, s, p, d = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    if k[0] != k[1] or s[0] != s[1] or not isinstance(p, tuple) or p[0] != p[1] or d != (1, 1):
        raise UsageError(f"conv {name!r}: only square kernels/strides/paddings without dilation are supported")


def _norms(gm: fx.GraphModule) -> dict[str, str]:
    modules = dict(gm.named_modules())
    norms = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], nn.BatchNorm2d):
            src = node.args[0]
            if (isinstance(src, fx.Node) and src.op == "call_module" and len(src.users) == 1
                    and isinstance(modules[src.target], nn.Conv2d)):
                norms[src.target] = node.target
    return norms


def _activation(node: fx.Node, modules: dict) -> str | None:
    """The NetSpec name of the activation ``node`` computes, else None."""
    if node.op == "call_module":
        return _ACT_MODULES.get(type(modules[node.target]))
    if node.op == "call_function":
        return _ACT_FUNCTIONS.get(node.target)
    if node.op == "call_method":
        return _ACT_METHODS.get(node.target)
    return None


def _act_after(node: fx.Node, modules: dict) -> tuple[str, fx.Node | None]:
    """The activation applied to ``node``'s output before anything else reads it (see LayerSpec.act),
    and the node computing it (None: "none")."""
    while len(node.users) == 1:
        (user,) = node.users
        act = _activation(user, modules)
        if act is not None:
            return act, user
        transparent = (user.op == "call_module" and isinstance(modules[user.target], _TRANSPARENT)) or (
            user.op == "call_function" and user.target is _F.dropout)
        if not transparent:
            break
        node = user
    return "none", None


def norm_layers(model: nn.Module) -> dict[str, str]:
    """{conv name: name of the BatchNorm2d that alone reads its output} (no forward pass needed)."""
    return _norms(_graph_module(model))


def _is_global_mean(node: fx.Node) -> bool:
    if not ((node.op == "call_function" and node.target in _MEAN[0]) or
            (node.op == "call_method" and node.target in _MEAN[1])):
        return False
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
    shape = _shape(node.args[0])
    return shape is not None and len(shape) == 4 and sorted(d % 4 for d in dims) == [2, 3]


class _Reader:
    """Walks a shape-propagated fx graph and records layers, ops, coupling and frozen channels.

    Each tensor value is described by its channel parts: ((uid, channels), ...) with uid a
    union-find id (a layer's output channels), or _IMAGE for channels never pruned.  One part
    unless the tensor is a concatenation.
    """

    def __init__(self, gm: fx.GraphModule, model_name: str):
        self.gm, self.model_name = gm, model_name
        self.modules = dict(gm.named_modules())
        self.uf = _UnionFind()
        self.value: dict[fx.Node, tuple] = {}
        self.frozen: list[tuple[int, str]] = []  # (uid, reason), first reason wins
        self.layers: list[tuple[str, nn.Module, tuple, int, fx.Node]] = []  # name, module, in parts, out uid, node
        self.ops: list[tuple[str, fx.Node, tuple, dict]] = []  # kind, node (its shape), parts, extra fields
        self.absorbed: set[fx.Node] = set()  # activations fused into a layer, add or mul
        self.norms = _norms(gm)
        self.normed = set(self.norms.values())

    # -- channel bookkeeping -------------------------------------------------------------------
    def freeze(self, parts: tuple, reason: str) -> None:
        for uid, _ in parts:
            if uid >= 0:
                self.frozen.append((uid, reason))

    def fixed(self, node: fx.Node) -> tuple:
        shape = _shape(node)
        return ((_IMAGE, int(shape[1]) if shape is not None and len(shape) > 1 else 0),)

    def parts_of(self, arg) -> tuple | None:
        return self.value.get(arg) if isinstance(arg, fx.Node) else None

    def tensor_inputs(self, node: fx.Node) -> list[fx.Node]:
        found = []
        fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) if n in self.value else None)
        return found

    def unknown(self, node: fx.Node, what: str) -> None:
        """An op jcw cannot follow: the channels it reads are frozen, its output is never pruned."""
        for arg in self.tensor_inputs(node):
            self.freeze(self.value[arg], f"read by {what}")
        if _shape(node) is not None:
            self.value[node] = self.fixed(node)

    def couple(self, a: tuple, b: tuple, residual: bool, node: fx.Node, what: str) -> tuple:
        """Union two equally split tensors part by part; anything else freezes both."""
        if len(a) == len(b) and all(ca == cb for (_, ca), (_, cb) in zip(a, b)):
            out = []
            for (ua, c), (ub, _) in zip(a, b):
                if ua >= 0 and ub >= 0:
                    out.append((self.uf.union(ua, ub, residual), c))
                else:
                    self.freeze(((ua, c), (ub, c)), f"{what} with channels that are never pruned")
                    out.append((_IMAGE, c))
            return tuple(out)
        self.freeze(a + b, f"{what} of differently concatenated tensors")
        return self.fixed(node)

    def op(self, kind: str, node: fx.Node, parts: tuple, **extra) -> None:
        self.ops.append((kind, node, parts, extra))

    # -- nodes -----------------------------------------------------------------------------------
    def read(self) -> None:
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.value[node] = self.fixed(node)
            elif node.op in ("output", "get_attr"):
                continue
            elif node.op == "call_module":
                self.module(node, self.modules[node.target])
            else:
                self.function(node)

    def source(self, node: fx.Node) -> tuple:
        arg = node.args[0] if node.args else None
        parts = self.parts_of(arg)
        if parts is None:
            raise UsageError(f"unsupported node {node.format_node()}: first argument is not a tensor")
        return parts

    def module(self, node: fx.Node, mod: nn.Module) -> None:
        name = node.target
        if isinstance(mod, nn.Conv2d):
            _check_conv(name, mod)
            parts = self.source(node)
            if _depthwise(mod):
                if len(parts) > 1:
                    self.freeze(parts, f"depthwise conv {name} reads a concatenation")
                    parts = self.fixed(node.args[0])
                out = parts[0][0]
            else:
                out = self.uf.new()
                if mod.groups > 1:  # grouped (ResNeXt / ShuffleNet style): its groups are kept whole
                    reason = f"grouped conv {name} (groups={mod.groups}) keeps its groups whole"
                    self.freeze(parts + ((out, mod.out_channels),), reason)
            self.layers.append((name, mod, parts, out, node))
            self.value[node] = ((out, mod.out_channels),)
        elif isinstance(mod, nn.Linear):
            parts = self.source(node)
            shape = _shape(node.args[0])
            if len(shape) != 2:
                self.freeze(parts, f"linear {name} reads a {len(shape)}-d tensor")
                parts = self.fixed(node.args[0])
            out = self.uf.new()
            self.layers.append((name, mod, parts, out, node))
            self.value[node] = ((out, mod.out_features),)
        elif isinstance(mod, nn.BatchNorm2d):
            parts = self.source(node)
            if name not in self.normed:
                self.freeze(parts, f"BatchNorm {name} does not directly follow a conv")
            self.value[node] = parts
        elif isinstance(mod, _PASS_MODULES) or type(mod).__name__ in _DROP_PATH:
            self.value[node] = self.source(node)
        elif isinstance(mod, nn.Flatten):
            self.flatten(node, f"flatten {name}")
        elif type(mod) in _ACT_MODULES:
            self.activation(node, _ACT_MODULES[type(mod)])
        elif isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
            kind = "maxpool" if isinstance(mod, nn.MaxPool2d) else "avgpool"
            k, s, p = mod.kernel_size, mod.stride, mod.padding
            square = all(isinstance(v, int) for v in (k, s, p)) and not mod.ceil_mode and getattr(mod, "dilation", 1) == 1
            if not square:
                self.unknown(node, f"{kind} {name} (only square, floor-mode pools are modelled)")
                return
            self.value[node] = self.source(node)
            self.op(kind, node.args[0], self.value[node], kernel=k, stride=s, padding=p)
        elif isinstance(mod, nn.AdaptiveAvgPool2d) and mod.output_size in (1, (1, 1)):
            self.value[node] = self.source(node)
            self.op("avgpool", node.args[0], self.value[node])
        else:
            self.unknown(node, f"module {name} ({type(mod).__name__})")

    def function(self, node: fx.Node) -> None:
        f, method = node.target, node.op == "call_method"
        if _shape(node) is None or not self.tensor_inputs(node):
            return  # shape arithmetic, sizes and constants
        if (f in _ADD_FUNCTIONS) or (method and f in _ADD_METHODS):
            self.binary(node, "add")
        elif (f in _MUL_FUNCTIONS) or (method and f in _MUL_METHODS):
            self.binary(node, "mul")
        elif not method and f in _CAT_FUNCTIONS:
            self.concat(node)
        elif _activation(node, self.modules) is not None:
            self.activation(node, _activation(node, self.modules))
        elif (not method and f in _PASS_FUNCTIONS) or (method and f in _PASS_METHODS):
            self.value[node] = self.source(node)
        elif (not method and f in _FLATTEN_FUNCTIONS) or (method and f in _FLATTEN_METHODS):
            self.flatten(node, f"{'.' if method else ''}{getattr(f, '__name__', f)}()")
        elif _is_global_mean(node) or (f is _F.adaptive_avg_pool2d and node.args[1:2] in ((1,), ((1, 1),))):
            self.value[node] = self.source(node)
            self.op("avgpool", node.args[0], self.value[node])
        else:
            self.unknown(node, f"{node.format_node()}")

    def activation(self, node: fx.Node, act: str) -> None:
        self.value[node] = self.source(node)
        if node not in self.absorbed:
            self.op("act", node.args[0], self.value[node], act=act)

    def flatten(self, node: fx.Node, what: str) -> None:
        """Flatten/view/reshape: channel-safe when it only drops 1x1 spatial dims (or keeps the shape)."""
        parts = self.source(node)
        src, out = _shape(node.args[0]), _shape(node)
        if out is not None and src is not None and (tuple(out) == tuple(src) or (
                len(src) == 4 and src[2] * src[3] == 1 and tuple(out) == tuple(src[:2])) or (
                len(src) == 2 and tuple(out) == (src[0], src[1], 1, 1))):
            self.value[node] = parts
        else:
            self.unknown(node, f"{what} (changes the channel layout)")

    def binary(self, node: fx.Node, kind: str) -> None:
        a, b = node.args[:2]
        pa, pb = self.parts_of(a), self.parts_of(b)
        what = "residual add" if kind == "add" else "multiply"
        if pa is None or pb is None:  # with a scalar, a constant or a parameter
            parts = pa or pb
            other = b if pa is not None else a
            if isinstance(other, fx.Node) and _shape(other) is not None and len(_shape(other)) > 1 \
                    and _shape(other)[1] > 1:
                self.freeze(parts, f"{what} with a per-channel constant {other.name}")
            self.value[node] = parts
            return
        sa, sb = _shape(a), _shape(b)
        big, gate = (a, b) if sa.numel() >= sb.numel() else (b, a)
        if len(sa) > 1 and len(sb) > 1 and (sa[1] == 1 or sb[1] == 1) and sa[1] != sb[1]:
            self.value[node] = self.value[big]  # a one-channel gate (spatial attention) couples no channels
        elif len(sa) != len(sb) or sa[1:2] != sb[1:2]:
            self.unknown(node, f"{what} {node.name} of tensors {tuple(sa)} and {tuple(sb)}")
            return
        else:
            self.value[node] = self.couple(pa, pb, kind == "add", node, what)
        act, act_node = _act_after(node, self.modules)
        if act_node is not None:
            self.absorbed.add(act_node)
        self.op(kind, big if kind == "mul" else node, self.value[node], act=act)

    def concat(self, node: fx.Node) -> None:
        tensors = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        shape = _shape(node)
        if shape is None or len(shape) not in (2, 4) or dim % len(shape) != 1 or any(self.parts_of(t) is None for t in tensors):
            self.unknown(node, f"{node.format_node()} (only concatenation of feature maps along channels)")
            return
        parts = tuple(p for t in tensors for p in self.value[t])
        self.value[node] = parts
        self.op("concat", node, parts)


def trace(model: nn.Module, resolution: int, name: str | None = None) -> Trace:
    """Trace ``model`` on a (1, 3, resolution, resolution) input and describe it (see ``describe``)."""
    gm = _graph_module(model)
    modes = {m: m.training for m in gm.modules()}
    gm.eval()
    param = next(model.parameters(), None)
    kw = {} if param is None else {"dtype": param.dtype, "device": param.device}
    with torch.no_grad():
        ShapeProp(gm).propagate(torch.zeros(1, 3, resolution, resolution, **kw))
    for m, training in modes.items():
        m.training = training

    r = _Reader(gm, name or type(model).__name__.lower())
    for node in gm.graph.nodes:  # activations fused into the layer before them
        if node.op == "call_module" and isinstance(r.modules[node.target], (nn.Conv2d, nn.Linear)):
            act, act_node = _act_after(node, r.modules)
            if act_node is not None:
                r.absorbed.add(act_node)
    r.read()
    uf = r.uf
    calls = Counter(x[0] for x in r.layers)
    shared = next((n for n, k in calls.items() if k > 1), None)
    if shared is not None:
        raise UsageError(f"layer {shared!r} is called {calls[shared]} times (shared weights); jcw prunes models "
                         "that use each conv and linear layer once")
    convs = [x for x in r.layers if isinstance(x[1], nn.Conv2d)]
    fcs = [x for x in r.layers if isinstance(x[1], nn.Linear)]
    if not convs or not fcs or r.layers[-1] is not fcs[-1]:
        raise UsageError("the model must end with a linear classifier (nn.Linear) after its convs")
    classifier = fcs[-1]

    # Group ids: roots numbered in order of first appearance among the layers' outputs.
    gid: dict[int, int] = {}
    for x in r.layers:
        if x is not classifier and x[3] >= 0:
            gid.setdefault(uf.find(x[3]), len(gid))
    reasons: dict[int, str] = {}
    for uid, reason in r.frozen:
        reasons.setdefault(gid[uf.find(uid)], reason)

    def group_of(uid: int) -> int:
        return _IMAGE if uid == _IMAGE else gid[uf.find(uid)]

    def spec_parts(parts: tuple) -> tuple[int, tuple]:
        """(group, in_parts) of a tensor: its one group and (), or CONCAT and the parts."""
        if len(parts) == 1:
            return group_of(parts[0][0]), ()
        return CONCAT, tuple((group_of(u), c) for u, c in parts)

    layers = []
    for i, x in enumerate(r.layers):
        lname, mod, parts, out_uid, node = x
        in_shape = _shape(node.args[0])
        in_group, in_parts = spec_parts(parts)
        act = "none" if x is classifier else _act_after(node, r.modules)[0]
        common = dict(name=lname, in_group=in_group, in_parts=in_parts, bias=mod.bias is not None, act=act)
        if isinstance(mod, nn.Conv2d):
            if in_shape[-1] != in_shape[-2]:
                raise UsageError(f"conv {lname!r}: non-square feature map {tuple(in_shape)}")
            layers.append(LayerSpec(
                kind=_conv_kind(mod, i == 0), kernel=mod.kernel_size[0], stride=mod.stride[0],
                padding=mod.padding[0], groups=mod.groups, in_res=int(in_shape[-1]), in_ch=mod.in_channels,
                out_ch=mod.out_channels, group=group_of(out_uid), norm=lname in r.norms, **common))
        else:
            layers.append(LayerSpec(
                kind="fc", kernel=1, stride=1, padding=0, groups=1, in_res=1, in_ch=mod.in_features,
                out_ch=mod.out_features, group=-1 if x is classifier else group_of(out_uid), norm=False, **common))

    ops = []
    for kind, node, parts, extra in r.ops:
        group, op_parts = spec_parts(parts)
        ops.append(OpSpec(kind=kind, in_res=int(_shape(node)[-1]), channels=sum(c for _, c in parts),
                          group=group, parts=op_parts, **extra))

    groups = []
    for root, g in sorted(gid.items(), key=lambda kv: kv[1]):
        members = [x for x in layers if x.group == g]
        groups.append(GroupSpec(
            id=g, channels=members[0].out_ch, residual=uf.residual[root],
            strided=any(x.stride > 1 for x in members), members=tuple(x.name for x in members),
            frozen=reasons.get(g, "")))
    spec = NetSpec(model=r.model_name, resolution=int(resolution), num_classes=classifier[1].out_features,
                   layers=tuple(layers), ops=tuple(ops), groups=tuple(groups))
    return Trace(spec, r.norms)


def describe(model: nn.Module, resolution: int, name: str | None = None) -> NetSpec:
    """NetSpec of ``model`` at a square input ``resolution``, coupling derived from the fx graph.

    Every conv outside a depthwise conv opens a coupling group; a depthwise conv's output stays in
    its input's group; an add merges its operands' groups (union-find) and marks them residual.
    """
    return trace(model, resolution, name).spec


def describe_model(model: nn.Module, resolution: int, name: str | None = None) -> NetSpec:
    """``describe`` for a user's model: a model the tracer cannot follow raises UsageError saying what jcw handles."""
    if not isinstance(model, nn.Module):
        raise UsageError(f"model must be a torch nn.Module (e.g. jcw.create_model(...)), got {type(model).__name__}")
    try:
        return describe(model, resolution, name)
    except UsageError as e:
        raise UsageError(f"{type(model).__name__} cannot be pruned by jcw: {e}; supported: {SUPPORTED}") from None
    except Exception as e:  # torch.fx cannot trace it (data-dependent control flow, unsupported calls)
        raise UsageError(f"{type(model).__name__} cannot be traced by torch.fx ({type(e).__name__}: {e}); "
                         "jcw prunes models whose forward is a static graph") from None


def classifier_classes(model: nn.Module) -> int:
    """Class count of a model: the output size of its last nn.Linear."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)] if isinstance(model, nn.Module) else []
    if not linears:
        raise UsageError(f"model {type(model).__name__} has no nn.Linear classifier; jcw needs one final linear layer")
    return linears[-1].out_features


def write_specs(directory: Path = SPEC_DIR) -> list[Path]:
    """Write ``<model>.json`` for every zoo model at its default resolution (atomically)."""
    from jcw.models import create_model, default_resolution, list_models

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for model_name in list_models():
        spec = describe(create_model(model_name), default_resolution(model_name), name=model_name)
        path = directory / f"{model_name}.json"
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{model_name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(spec.to_json() + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m jcw.layers --write-specs [--dir DIR]`` or ``--model REF [--resolution R] --out FILE``."""
    parser = argparse.ArgumentParser(prog="python -m jcw.layers", description=__doc__)
    parser.add_argument("--write-specs", action="store_true", help="write latency/specs/<model>.json for the zoo")
    parser.add_argument("--dir", type=Path, default=SPEC_DIR, help=f"output directory (default {SPEC_DIR})")
    parser.add_argument("--model", help="write this model's NetSpec instead (a zoo name, path/to/file.py:factory "
                                        "or package.module:factory), e.g. for profile-latency on a board")
    parser.add_argument("--resolution", type=int, help="input size of --model (default: the zoo's, else 224)")
    parser.add_argument("--out", type=Path, help="the NetSpec .json file --model writes")
    args = parser.parse_args(argv)
    if args.model:
        from jcw.models import deploy_resolution, load_model, model_label

        if args.out is None:
            parser.error("--model needs --out FILE.json")
        try:
            model = load_model(args.model)
            resolution = deploy_resolution(model, args.resolution)
            spec = describe_model(model, resolution, model_label(args.model))
        except UsageError as e:
            parser.error(str(e))
        atomic_write(args.out, spec.to_json() + "\n")
        print(f"wrote {args.out}: {spec.model} at {resolution}x{resolution}, {len(spec.layers)} layers")
        return 0
    if not args.write_specs:
        parser.error("nothing to do: pass --write-specs or --model REF --out FILE")
    for path in write_specs(args.dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
