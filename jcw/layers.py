"""Derive a model's NetSpec (prunable layers, coupling groups, ops) from a torch.fx trace."""

from __future__ import annotations

import argparse
import operator
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from jcw.core.errors import UsageError
from jcw.core.netspec import SPEC_DIR, GroupSpec, LayerSpec, NetSpec, OpSpec

# Modules and functions that keep the channels of their (first) input untouched.
_PASS_MODULES = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Dropout, nn.Identity, nn.Flatten)
_PASS_FUNCTIONS = {torch.flatten, torch.relu, nn.functional.relu, nn.functional.relu6, nn.functional.dropout}
_PASS_METHODS = {"flatten", "view", "reshape", "relu", "relu_", "contiguous"}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_"}
_IMAGE = -1
_FC = -2


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

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        root = min(ra, rb)
        self.parent[max(ra, rb)] = root
        self.residual[root] = True
        return root


@dataclass
class Trace:
    """A model's NetSpec plus the BatchNorm module following each conv (for weight surgery)."""

    spec: NetSpec
    norms: dict[str, str] = field(default_factory=dict)


def _shape(node: fx.Node) -> torch.Size:
    return node.meta["tensor_meta"].shape


def _conv_kind(conv: nn.Conv2d, first: bool) -> str:
    if first:
        return "stem"
    if conv.groups > 1:
        return "depthwise"
    return "pointwise" if conv.kernel_size == (1, 1) else "regular"


def _check_conv(name: str, conv: nn.Conv2d) -> None:
    k, s, p, d = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    if k[0] != k[1] or s[0] != s[1] or not isinstance(p, tuple) or p[0] != p[1] or d != (1, 1):
        raise UsageError(f"conv {name!r}: only square kernels/strides/paddings without dilation are supported")
    if conv.groups > 1 and not (conv.groups == conv.in_channels == conv.out_channels):
        raise UsageError(f"conv {name!r}: grouped convs other than depthwise are not supported")


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


_ACT_MODULES = {nn.ReLU: "relu", nn.ReLU6: "relu6"}
_ACT_FUNCTIONS = {torch.relu: "relu", nn.functional.relu: "relu", nn.functional.relu6: "relu6"}
_ACT_METHODS = {"relu": "relu", "relu_": "relu"}
# Ops between a conv (or add) and its activation that leave values the activation sees alone.
_TRANSPARENT = (nn.BatchNorm2d, nn.Dropout, nn.Identity)


def _act_after(node: fx.Node, modules: dict) -> str:
    """The activation applied to ``node``'s output before anything else reads it (see LayerSpec.act)."""
    while len(node.users) == 1:
        (user,) = node.users
        if user.op == "call_module":
            mod = modules[user.target]
            if type(mod) in _ACT_MODULES:
                return _ACT_MODULES[type(mod)]
            if not isinstance(mod, _TRANSPARENT):
                return "none"
        elif user.op == "call_function" and user.target in _ACT_FUNCTIONS:
            return _ACT_FUNCTIONS[user.target]
        elif user.op == "call_method" and user.target in _ACT_METHODS:
            return _ACT_METHODS[user.target]
        elif not (user.op == "call_function" and user.target is nn.functional.dropout):
            return "none"
        node = user
    return "none"


def norm_layers(model: nn.Module) -> dict[str, str]:
    """{conv name: name of the BatchNorm2d that alone reads its output} (no forward pass needed)."""
    return _norms(fx.symbolic_trace(model))


def trace(model: nn.Module, resolution: int, name: str | None = None) -> Trace:
    """Trace ``model`` on a (1, 3, resolution, resolution) input and describe it (see ``describe``)."""
    gm = fx.symbolic_trace(model)
    modules = dict(gm.named_modules())
    modes = {m: m.training for m in gm.modules()}
    gm.eval()
    param = next(model.parameters(), None)
    kw = {} if param is None else {"dtype": param.dtype, "device": param.device}
    with torch.no_grad():
        ShapeProp(gm).propagate(torch.zeros(1, 3, resolution, resolution, **kw))
    for m, training in modes.items():
        m.training = training

    uf = _UnionFind()
    owner: dict[fx.Node, int] = {}  # node -> union-find id of its channels (or _IMAGE / _FC)
    raw_layers: list[tuple[str, nn.Module, int, int, fx.Node]] = []  # name, module, in id, out id, node
    raw_ops: list[tuple[str, fx.Node, int, dict]] = []

    def src(node: fx.Node) -> fx.Node:
        arg = node.args[0]
        if not isinstance(arg, fx.Node):
            raise UsageError(f"unsupported node {node.format_node()}: first argument is not a tensor")
        return arg

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            owner[node] = _IMAGE
        elif node.op == "output" or node.op == "get_attr":
            continue
        elif node.op == "call_module":
            mod = modules[node.target]
            inp = src(node)
            if isinstance(mod, nn.Conv2d):
                _check_conv(node.target, mod)
                if mod.groups > 1:
                    out = owner[inp]
                else:
                    out = uf.new()
                raw_layers.append((node.target, mod, owner[inp], out, node))
                owner[node] = out
            elif isinstance(mod, nn.Linear):
                raw_layers.append((node.target, mod, owner[inp], _FC, node))
                owner[node] = _FC
            elif isinstance(mod, _PASS_MODULES):
                owner[node] = owner[inp]
            elif isinstance(mod, nn.MaxPool2d):
                owner[node] = owner[inp]
                k, s, p = (mod.kernel_size, mod.stride, mod.padding)
                if not all(isinstance(v, int) for v in (k, s, p)) or mod.dilation != 1 or mod.ceil_mode:
                    raise UsageError(f"max-pool {node.target!r}: only square, floor-mode pools are supported")
                raw_ops.append(("maxpool", inp, owner[inp], {"kernel": k, "stride": s, "padding": p}))
            elif isinstance(mod, nn.AdaptiveAvgPool2d):
                if mod.output_size not in (1, (1, 1)):
                    raise UsageError(f"{node.target!r}: only global average pooling (output size 1) is supported")
                owner[node] = owner[inp]
                raw_ops.append(("avgpool", inp, owner[inp], {}))
            else:
                raise UsageError(f"module {node.target!r} of type {type(mod).__name__} is not supported")
        elif node.target in _ADD_FUNCTIONS or (node.op == "call_method" and node.target in _ADD_METHODS):
            a, b = node.args[:2]
            if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)) or owner[a] < 0 or owner[b] < 0:
                raise UsageError(f"unsupported add {node.format_node()}: both operands must be conv feature maps")
            owner[node] = uf.union(owner[a], owner[b])
            raw_ops.append(("add", node, owner[node], {}))
        elif node.target in _PASS_FUNCTIONS or (node.op == "call_method" and node.target in _PASS_METHODS):
            owner[node] = owner[src(node)]
        else:
            raise UsageError(f"unsupported operation {node.format_node()} in {type(model).__name__}")

    norms = _norms(gm)
    convs = [x for x in raw_layers if isinstance(x[1], nn.Conv2d)]
    fcs = [x for x in raw_layers if isinstance(x[1], nn.Linear)]
    if not convs or len(fcs) != 1 or raw_layers[-1] is not fcs[0]:
        raise UsageError("the model must be convs followed by exactly one final linear layer")

    # Group ids: roots numbered in order of first appearance among the layers' outputs.
    gid: dict[int, int] = {}
    for _, _, _, out, _ in convs:
        gid.setdefault(uf.find(out), len(gid))

    def group_of(uid: int) -> int:
        return uid if uid == _IMAGE else (-1 if uid == _FC else gid[uf.find(uid)])

    layers = []
    for i, (lname, mod, in_id, out_id, node) in enumerate(raw_layers):
        in_shape = _shape(src(node))
        if isinstance(mod, nn.Conv2d):
            if in_shape[-1] != in_shape[-2]:
                raise UsageError(f"conv {lname!r}: non-square feature map {tuple(in_shape)}")
            layers.append(LayerSpec(
                name=lname, kind=_conv_kind(mod, i == 0), kernel=mod.kernel_size[0], stride=mod.stride[0],
                padding=mod.padding[0], groups=mod.groups, in_res=int(in_shape[-1]),
                in_ch=mod.in_channels, out_ch=mod.out_channels, group=group_of(out_id),
                in_group=group_of(in_id), bias=mod.bias is not None, norm=lname in norms,
                act=_act_after(node, modules)))
        else:
            feeding = [x.out_ch for x in layers if in_id >= 0 and x.group == group_of(in_id)]
            if len(in_shape) != 2 or feeding[:1] != [mod.in_features]:
                raise UsageError(f"linear {lname!r} must read the globally pooled channels of the last conv "
                                 f"(an (N, C) tensor), got {tuple(in_shape)}")
            layers.append(LayerSpec(
                name=lname, kind="fc", kernel=1, stride=1, padding=0, groups=1, in_res=1,
                in_ch=mod.in_features, out_ch=mod.out_features, group=-1, in_group=group_of(in_id),
                bias=mod.bias is not None, norm=False, act="none"))

    ops = [OpSpec(kind=kind, in_res=int(_shape(node)[-1]), channels=int(_shape(node)[1]),
                  group=group_of(uid), act=_act_after(node, modules) if kind == "add" else "none", **extra)
           for kind, node, uid, extra in raw_ops]

    groups = []
    for root, g in sorted(gid.items(), key=lambda kv: kv[1]):
        members = [x for x in layers if x.group == g]
        groups.append(GroupSpec(
            id=g, channels=members[0].out_ch, residual=uf.residual[root],
            strided=any(x.stride > 1 for x in members), members=tuple(x.name for x in members)))
    spec = NetSpec(model=name or type(model).__name__.lower(), resolution=int(resolution),
                   num_classes=fcs[0][1].out_features, layers=tuple(layers), ops=tuple(ops), groups=tuple(groups))
    return Trace(spec, norms)


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
        raise UsageError(f"{type(model).__name__} cannot be pruned by jcw: {e}; supported: convs (square, plain or "
                         "depthwise) with BatchNorm and ReLU/ReLU6, residual adds, max/global-average pooling, "
                         "and one final linear classifier") from None
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
    """CLI: ``python -m jcw.layers --write-specs [--dir DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m jcw.layers", description=__doc__)
    parser.add_argument("--write-specs", action="store_true", help="write latency/specs/<model>.json for the zoo")
    parser.add_argument("--dir", type=Path, default=SPEC_DIR, help=f"output directory (default {SPEC_DIR})")
    args = parser.parse_args(argv)
    if not args.write_specs:
        parser.error("nothing to do: pass --write-specs")
    for path in write_specs(args.dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
