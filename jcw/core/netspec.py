"""Torch-free description of a CNN's prunable layers, coupling groups and other ops (NetSpec)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from jcw.core.errors import UsageError

KINDS = ("stem", "regular", "depthwise", "pointwise", "fc")
OP_KINDS = ("maxpool", "avgpool", "add", "mul", "concat", "act")
ACTS = ("relu", "relu6", "hardswish", "hardsigmoid", "sigmoid", "silu", "gelu", "leaky_relu", "none")
IMAGE = -1  # in_group of a layer reading the input image (and group of the classifier)
_OPTIONAL = ("in_parts", "parts", "frozen")  # written only where set, so older specs stay as they were
CONCAT = -3  # in_group of a layer reading a concatenation: see LayerSpec.in_parts


def _parts(parts) -> tuple[tuple[int, int], ...]:
    """((group, channels), ...) as tuples of ints (JSON gives lists)."""
    return tuple((int(g), int(c)) for g, c in parts)
SPEC_DIR = Path(__file__).resolve().parents[2] / "latency" / "specs"  # shipped with the latency package


def conv_out_res(in_res: int, kernel: int, stride: int, padding: int) -> int:
    """Output size of a square convolution or pooling window (dilation 1, floor mode)."""
    return (in_res + 2 * padding - kernel) // stride + 1


@dataclass(frozen=True)
class LayerSpec:
    """One conv or linear layer, in forward order.

    ``group`` owns the output channels (-1: not prunable, the fc), ``in_group`` the input channels
    (-1: the image).  A depthwise conv owns no channels: ``group == in_group``.  ``bias`` and
    ``norm`` (a BatchNorm follows) only matter for parameter counts.  ``act``: the activation
    applied to the layer's (normalised) output before anything else reads it, one of ``ACTS``
    ("none" where a residual add or a linear bottleneck follows); the engine fuses it into the
    conv, and the latency profiler's context networks reproduce it.  Specs written before it
    existed load as "relu", as they were profiled.  ``in_parts``: for a layer reading a
    concatenation along channels (``in_group == CONCAT``), its ordered parts as (group, full
    channels); a part of group -1 is never pruned.  ``input_parts`` gives the parts of any layer.
    """

    name: str
    kind: str
    kernel: int
    stride: int
    padding: int
    groups: int
    in_res: int
    in_ch: int
    out_ch: int
    group: int
    in_group: int
    bias: bool = False
    norm: bool = False
    act: str = "relu"
    in_parts: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"layer {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if self.act not in ACTS:
            raise ValueError(f"layer {self.name!r}: act {self.act!r} is not one of {ACTS}")
        object.__setattr__(self, "in_parts", _parts(self.in_parts))
        if (self.in_group == CONCAT) != bool(self.in_parts) or (
                self.in_parts and sum(c for _, c in self.in_parts) != self.in_ch):
            raise ValueError(f"layer {self.name!r}: in_parts (the concatenated groups, summing to in_ch) go "
                             f"with in_group {CONCAT} and only with it")

    @property
    def input_parts(self) -> tuple[tuple[int, int], ...]:
        """The (group, full channels) parts of the layer's input, in channel order (one unless concatenated)."""
        return self.in_parts or ((self.in_group, self.in_ch),)

    @property
    def out_res(self) -> int:
        """Output spatial size (1 for fc)."""
        if self.kind == "fc":
            return 1
        return conv_out_res(self.in_res, self.kernel, self.stride, self.padding)

    @property
    def signature(self) -> tuple:
        """(kind, kernel, stride, in_res, in_ch, out_ch): the LatencyTable key of this layer."""
        return (self.kind, self.kernel, self.stride, self.in_res, self.in_ch, self.out_ch)


@dataclass(frozen=True)
class OpSpec:
    """Non-conv work on ``group``'s channels: "maxpool", "avgpool" (kernel 0 = global), "add" (of
    two tensors), "mul" (channel-wise: a squeeze-excitation gate, or elementwise), "act" (an
    activation no conv or add absorbs) or "concat" (along channels).  An op on a concatenation
    (a concat op always) has ``group`` CONCAT and lists the (group, full channels) parts in
    ``parts``, as ``LayerSpec.in_parts``; group -1: channels that are never pruned.

    ``act``: the activation applied to an add's or mul's result, or the "act" op's own (one of
    ``ACTS``; "none" for pools and concat).
    """

    kind: str
    in_res: int
    channels: int
    group: int
    kernel: int = 0
    stride: int = 0
    padding: int = 0
    act: str = "none"
    parts: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in OP_KINDS:
            raise ValueError(f"op kind {self.kind!r} is not one of {OP_KINDS}")
        if self.act not in ACTS:
            raise ValueError(f"{self.kind} op: act {self.act!r} is not one of {ACTS}")
        object.__setattr__(self, "parts", _parts(self.parts))
        if (self.group == CONCAT) != bool(self.parts) or (self.kind == "concat" and self.group != CONCAT):
            raise ValueError(f"{self.kind} op: parts (the concatenated groups) go with group {CONCAT} and "
                             "only with it; a concat op always has them")

    @property
    def channel_parts(self) -> tuple[tuple[int, int], ...]:
        """The (group, full channels) parts of the channels the op works on (one unless concatenated)."""
        return self.parts or ((self.group, self.channels),)

    @property
    def elementwise(self) -> bool:
        """True for ops that keep the spatial size (add, mul, act, concat)."""
        return self.kind in ("add", "mul", "act", "concat")

    @property
    def out_res(self) -> int:
        """Output spatial size."""
        if self.elementwise:
            return self.in_res
        if self.kernel == 0:
            return 1
        return conv_out_res(self.in_res, self.kernel, self.stride, self.padding)


@dataclass(frozen=True)
class GroupSpec:
    """A coupling group: output channels of ``members`` that are pruned together.

    ``residual``: joined by an add; ``strided``: some member conv has stride > 1.  ``frozen``:
    why the group cannot be pruned safely (kept at full width, no gene), "" when it can.
    """

    id: int
    channels: int
    residual: bool
    strided: bool
    members: tuple[str, ...]
    frozen: str = ""


@dataclass(frozen=True)
class NetSpec:
    """All prunable layers (forward order), other ops and coupling groups of a model at one resolution."""

    model: str
    resolution: int
    num_classes: int
    layers: tuple[LayerSpec, ...]
    ops: tuple[OpSpec, ...]
    groups: tuple[GroupSpec, ...]

    def layer(self, name: str) -> LayerSpec:
        """The layer called ``name``."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"{self.model} has no layer {name!r}")

    def to_dict(self) -> dict:
        """Plain JSON-able dict (``in_parts``, ``parts`` and ``frozen`` only where set)."""
        d = asdict(self)
        for item in (*d["layers"], *d["ops"], *d["groups"]):
            for key in _OPTIONAL:
                if key in item and not item[key]:
                    del item[key]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "NetSpec":
        """Inverse of ``to_dict``."""
        try:
            return cls(
                model=str(d["model"]),
                resolution=int(d["resolution"]),
                num_classes=int(d["num_classes"]),
                layers=tuple(LayerSpec(**x) for x in d["layers"]),
                # Specs from before ``act`` existed were profiled with a ReLU after every add.
                ops=tuple(OpSpec(**{"act": "relu" if x.get("kind") == "add" else "none", **x}) for x in d["ops"]),
                groups=tuple(GroupSpec(**{**x, "members": tuple(x["members"])}) for x in d["groups"]),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a NetSpec dict: {e}") from None

    def to_json(self, indent: int | None = 1) -> str:
        """JSON text of ``to_dict``."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "NetSpec":
        """Inverse of ``to_json``."""
        return cls.from_dict(json.loads(text))

    def with_classes(self, num_classes: int) -> "NetSpec":
        """The same network with a classifier of ``num_classes`` outputs."""
        fc = self.layers[-1]
        return replace(self, num_classes=int(num_classes), layers=self.layers[:-1] + (replace(fc, out_ch=int(num_classes)),))

    def at_resolution(self, resolution: int) -> "NetSpec":
        """The same network at another square input size (every in_res recomputed exactly)."""
        resolution = int(resolution)
        if resolution < 1:
            raise ValueError(f"resolution must be a positive integer, got {resolution}")
        if resolution == self.resolution:
            return self
        # Map each resolution of the traced net to its new value, walking from large to small:
        # every layer/op reads a size produced by the image or by a layer/op at a larger size.
        new = {self.resolution: resolution}
        items = [*self.layers, *self.ops]
        for item in sorted(items, key=lambda x: -x.in_res):
            if isinstance(item, LayerSpec) and item.kind == "fc":
                continue
            if item.in_res not in new:
                raise ValueError(f"{self.model}: cannot place input size {item.in_res} of {item}")
            r = new[item.in_res]
            if isinstance(item, OpSpec) and item.elementwise:
                continue
            if isinstance(item, OpSpec) and item.kernel == 0:
                out = 1
            else:
                out = conv_out_res(r, item.kernel, item.stride, item.padding)
            if out < 1:
                raise ValueError(f"resolution {resolution} is too small for {self.model}")
            if new.setdefault(item.out_res, out) != out:
                raise ValueError(f"{self.model}: inconsistent sizes at resolution {resolution}")
        layers = tuple(x if x.kind == "fc" else replace(x, in_res=new[x.in_res]) for x in self.layers)
        ops = tuple(replace(x, in_res=new[x.in_res]) for x in self.ops)
        return replace(self, resolution=resolution, layers=layers, ops=ops)


def shipped_models() -> list[str]:
    """Models with a shipped NetSpec (the zoo)."""
    return sorted(p.stem for p in SPEC_DIR.glob("*.json"))


def load_shipped(model: str) -> NetSpec:
    """The shipped spec of a zoo model at its default resolution (latency/specs/<model>.json)."""
    path = SPEC_DIR / f"{model}.json"
    if not path.is_file():
        raise UsageError(f"no shipped spec for model {model!r} ({path}); shipped: {', '.join(shipped_models())}")
    return NetSpec.from_json(path.read_text())
