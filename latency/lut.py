"""LatencyTable: per-layer (out_ch, in_ch, density) latency grids, JSON schema 1, trilinear lookup."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jcw.core.netspec import ACTS, OP_KINDS
from jcw.core.space import default_grid, kept_channels
from jcw.core.util import atomic_write
from jcw.core.errors import UsageError

FORMAT = "jcw-latency-table"
VERSION = 1
PROVENANCE_KINDS = ("measured", "modelled")
LAYER_KEYS = ("kind", "kernel", "stride", "in_res", "in_ch", "out_ch")  # JSON fields of a layer entry's key
OP_KEYS = ("kind", "kernel", "stride", "padding", "in_res", "channels")  # ... of an op entry's key
AXES = ("out_ch", "in_ch", "density")
# Activations every table before LayerSpec.act/OpSpec.act held without naming them: a conv's (or an
# add's) cost with one of these is one entry, whose key ends in "" and whose JSON has no "act" field.
# Any other activation is part of the key ("act": "silu"), so a table can hold the same layer signature
# with a ReLU and with a SiLU epilogue (efficientnet_b0 and mobilenet_v2 share several).
RELU_CLASS = ("none", "relu", "relu6")


RATIOS = tuple(float(r) for r in default_grid())
QUICK_RATIOS = (0.0, 0.3, 0.5, 0.7, 0.9, 1.0)
DENSITIES = RATIOS
QUICK_DENSITIES = (0.0, 0.3, 0.5, 0.7, 1.0)


@dataclass(frozen=True)
class InputCost:
    """The fixed work of one inference of a network (input copy, dispatch): a table op of kind "input"."""

    in_res: int
    channels: int
    kind: str = "input"
    kernel: int = 0
    stride: int = 0
    padding: int = 0
    group: int = -1

    @property
    def out_res(self) -> int:
        return self.in_res


def table_ops(spec) -> list:
    """The non-conv costs of ``spec`` a table must hold: its OpSpecs, then its InputCost."""
    return [*spec.ops, InputCost(spec.resolution, spec.layers[0].in_ch)]


def cost_act(act: str) -> str:
    """The activation as a table key holds it: "" for the ReLU class (none, relu, relu6), else its name."""
    return "" if act in RELU_CLASS else act


def layer_key(layer) -> tuple:
    """Table key of a conv/fc layer (a LayerSpec): its signature + ``cost_act`` of its activation."""
    return (*layer.signature, cost_act(layer.act))


def op_key(op) -> tuple:
    """Table key of a non-conv op (an OpSpec): (kind, kernel, stride, padding, in_res, channels, act).

    ``act``: an "act" op's own activation, always (relu included); for an add or a mul the
    ``cost_act`` of the activation applied to its result; "" for pools, concat and the input cost.
    """
    act = getattr(op, "act", "none")
    return (op.kind, op.kernel, op.stride, op.padding, op.in_res, op.channels,
            act if op.kind == "act" else cost_act(act))


def full_key(key: tuple) -> tuple:
    """A key as tables hold it: a 6-field key written before activations were keyed gets act ""."""
    key = tuple(key)
    return key + ("",) if len(key) == len(LAYER_KEYS) else key


def space_channels(full: int, ratios=RATIOS) -> list[int]:
    """Channel counts the search space produces at ``ratios`` (the space's own formula, ``kept_channels``)."""
    return sorted(set(kept_channels(full, np.asarray(ratios, dtype=np.float64)).tolist()))


def parts_channels(parts, ratios=RATIOS) -> list[int]:
    """Channel counts a tensor of (group, full channels) ``parts`` can have at ``ratios``.

    Parts of group -1 are never pruned (always full).  One pruned part: ``space_channels``.  A
    concatenation: every sum of its parts' counts, together with ``space_channels`` of the total
    (so that every count from 4 to the total lies inside the axis, whichever tensor of that size
    an entry of the same key was made for).  Only fixed parts: their total alone.
    """
    total = sum(c for _, c in parts)
    if all(g < 0 for g, _ in parts):
        return [total]
    sums = {0}
    for g, c in parts:
        values = [c] if g < 0 else space_channels(c, ratios)
        sums = {s + v for s in sums for v in values}
    return sorted(sums | set(space_channels(total, ratios)))


def layer_axes(layer, quick: bool = False) -> dict:
    """Default grid of a LayerSpec: channel counts and densities the search space can produce.

    Output channels of group -1 (the classifier, a depthwise conv reading fixed channels) are
    fixed, like the input channels of the stem and of any layer reading only fixed channels;
    input channels of a layer reading a concatenation follow ``parts_channels``.  fc layers and
    depthwise convs are dense (a depthwise conv has in_ch = out_ch).  A hidden fc with a group of
    its own gets a channel axis like a conv's output.
    """
    ratios = QUICK_RATIOS if quick else RATIOS
    dens = list(QUICK_DENSITIES if quick else DENSITIES)
    out_ch = [layer.out_ch] if layer.group < 0 else space_channels(layer.out_ch, ratios)
    if layer.kind == "depthwise":
        return {"out_ch": out_ch, "in_ch": None, "density": None}
    in_ch = [layer.in_ch] if layer.kind == "stem" else parts_channels(layer.input_parts, ratios)
    return {"out_ch": out_ch, "in_ch": in_ch, "density": None if layer.kind == "fc" else dens}


def op_axes(op, quick: bool = False) -> dict:
    """Default grid of an OpSpec: the channel counts its channel parts can take (``parts_channels``:
    its coupling group's, a concatenation's sums, fixed for group -1 and for "input")."""
    if op.kind == "input":
        return {"out_ch": [op.channels], "in_ch": None, "density": None}
    return {"out_ch": parts_channels(op.channel_parts, QUICK_RATIOS if quick else RATIOS), "in_ch": None,
            "density": None}


def describe_key(key: tuple) -> str:
    """Human-readable key, e.g. ``pointwise k1 s1 @56 24->144``, ``pointwise k1 s1 @56 24->144 silu``,
    ``add @56 c24`` or ``act @14 c240 hardswish``."""
    key = full_key(key)
    act = f" {key[6]}" if key[6] else ""
    if key[0] not in (*OP_KINDS, "input"):
        kind, kernel, stride, in_res, in_ch, out_ch = key[:6]
        return f"{kind} k{kernel} s{stride} @{in_res} {in_ch}->{out_ch}{act}"
    kind, kernel, stride, padding, in_res, channels = key[:6]
    window = f" k{kernel} s{stride} p{padding}" if kernel else ""
    return f"{kind}{window} @{in_res} c{channels}{act}"


@dataclass
class Entry:
    """One grid: latency (ms) over up to three axes.

    ``axes`` maps "out_ch", "in_ch", "density" to increasing value arrays, or None where the cost
    does not depend on that coordinate (depthwise: in_ch is out_ch and density is 1; ops: only
    channels, stored as "out_ch").  ``mean``/``std``/``count`` have shape
    (len(out_ch), len(in_ch) or 1, len(density) or 1).
    """

    key: tuple
    axes: dict
    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray

    @classmethod
    def build(cls, key: tuple, axes: dict, mean, std=None, count=None) -> "Entry":
        """An entry from axis lists (None = not a coordinate) and arrays of matching size."""
        axes = {a: None if axes.get(a) is None else np.asarray(axes[a], dtype=float if a == "density" else np.int64) for a in AXES}
        e = cls(key=full_key(key), axes=axes, mean=None, std=None, count=None)
        e.mean = np.asarray(mean, dtype=float).reshape(e.shape)
        e.std = np.zeros(e.shape) if std is None else np.asarray(std, dtype=float).reshape(e.shape)
        e.count = np.zeros(e.shape) if count is None else np.asarray(count, dtype=float).reshape(e.shape)
        return e

    @property
    def shape(self) -> tuple:
        return tuple(1 if self.axes[a] is None else len(self.axes[a]) for a in AXES)

    def points(self) -> int:
        return int(np.prod(self.shape))

    def interpolate(self, out_ch, in_ch=None, density=None) -> np.ndarray:
        """Trilinear latency (ms) at query points (1-D arrays of equal length)."""
        out_ch = np.asarray(out_ch)
        n = out_ch.shape[0]
        cols = [np.asarray(v if v is not None else np.ones(n)).reshape(n, 1) for v in (out_ch, in_ch, density)]
        return Grid([self], [describe_key(self.key)])(*cols)[:, 0]


def describe_layer(layer) -> str:
    """How errors and ``LatencyTable.missing`` name a LayerSpec: layer 'name' (its key)."""
    return f"layer {layer.name!r} ({describe_key(layer_key(layer))})"


def _op_label(op) -> str:
    return f"op {describe_key(op_key(op))}"


class Entries(dict):
    """A table's entries by key; a 6-field key (written before activations were keyed) means act ""."""

    def __init__(self, items=()):
        super().__init__()
        for k, v in dict(items).items():
            self[k] = v

    def __getitem__(self, key):
        return super().__getitem__(full_key(key))

    def __setitem__(self, key, value):
        super().__setitem__(full_key(key), value)

    def __contains__(self, key):
        return super().__contains__(full_key(key))

    def get(self, key, default=None):
        return super().get(full_key(key), default)

    def setdefault(self, key, default=None):
        return super().setdefault(full_key(key), default)

    def pop(self, key, *default):
        return super().pop(full_key(key), *default)


@dataclass
class LatencyTable:
    """Latency grids for layer signatures and ops of one device + thread count."""

    device: str
    threads: int
    provenance: dict
    layers: dict = field(default_factory=dict)
    ops: dict = field(default_factory=dict)
    models: list = field(default_factory=list)

    def __post_init__(self) -> None:
        # Keys of 6 fields (made before activations were keyed) mean act "".
        self.layers = Entries(self.layers)
        self.ops = Entries(self.ops)

    @property
    def kind(self) -> str:
        """"measured" or "modelled"."""
        return self.provenance["kind"]

    def layer(self, layer) -> Entry:
        """The grid of a LayerSpec (UsageError naming the layer when absent)."""
        key = layer_key(layer)
        if key not in self.layers:
            raise self._no_entry(describe_layer(layer))
        return self.layers[key]

    def op(self, op) -> Entry:
        """The grid of an OpSpec (UsageError naming the op when absent)."""
        key = op_key(op)
        if key not in self.ops:
            raise self._no_entry(_op_label(op))
        return self.ops[key]

    def _no_entry(self, what: str) -> UsageError:
        return UsageError(f"latency table ({self.device}, {self.threads} thread(s)) has no entry for "
                                 f"{what}; profile this model with profile-latency")

    def missing(self, spec) -> list[str]:
        """Descriptions of the layers and ops of ``spec`` that have no entry."""
        miss = [describe_layer(x) for x in spec.layers if layer_key(x) not in self.layers]
        miss += [_op_label(x) for x in table_ops(spec) if op_key(x) not in self.ops]
        return miss

    def check_covers(self, spec) -> None:
        """Raise UsageError listing every layer/op of ``spec`` without an entry."""
        miss = self.missing(spec)
        if miss:
            shown = "; ".join(miss[:5]) + (f"; ... ({len(miss)} in all)" if len(miss) > 5 else "")
            raise UsageError(
                f"latency table ({self.device}, {self.threads} thread(s)) does not cover "
                f"{spec.model} at {spec.resolution}: no entry for {shown}"
            )

    def merged(self, other: "LatencyTable") -> "LatencyTable":
        """A table with the entries of both (``other`` wins on equal keys, provenance of ``other``)."""
        models = list(dict.fromkeys([*self.models, *other.models]))
        return LatencyTable(
            device=other.device,
            threads=other.threads,
            provenance=other.provenance,
            layers={**self.layers, **other.layers},
            ops={**self.ops, **other.ops},
            models=models,
        )

    def agreement(self, other: "LatencyTable", tolerance: float = 0.05, floor_ms: float = 0.0) -> tuple[float, int]:
        """(fraction of common grid points whose means differ by <= tolerance relative, or by at most
        ``floor_ms`` absolute, their number)."""
        close = total = 0
        for mine, theirs in ((self.layers, other.layers), (self.ops, other.ops)):
            for key in mine.keys() & theirs.keys():
                a, b = mine[key], theirs[key]
                if a.shape != b.shape or any(
                        (a.axes[n] is None) != (b.axes[n] is None) or (a.axes[n] is not None and not np.array_equal(a.axes[n], b.axes[n]))
                        for n in AXES):
                    continue
                ok = np.abs(a.mean - b.mean) <= np.maximum(tolerance * np.maximum(np.abs(b.mean), 1e-12), floor_ms)
                close += int(ok.sum())
                total += ok.size
        return (close / total if total else 0.0), total

    def to_dict(self) -> dict:
        """JSON-able dict of schema version 1 (entries sorted by key)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "device": self.device,
            "threads": self.threads,
            "provenance": self.provenance,
            "models": list(self.models),
            "layers": [_entry_dict(e, LAYER_KEYS) for _, e in sorted(self.layers.items())],
            "ops": [_entry_dict(e, OP_KEYS) for _, e in sorted(self.ops.items())],
        }

    def to_json(self) -> str:
        """Deterministic JSON text (same table -> same bytes), one line per entry."""
        d = self.to_dict()
        head = json.dumps({k: v for k, v in d.items() if k not in ("layers", "ops")}, indent=1)
        parts = [head[:-2]]
        for section in ("layers", "ops"):
            rows = ",\n".join("  " + json.dumps(e, separators=(",", ":")) for e in d[section])
            parts.append(f' "{section}": [\n{rows}\n ]' if rows else f' "{section}": []')
        return ",\n".join(parts) + "\n}\n"

    def save(self, path) -> Path:
        """Write atomically (temp file + rename)."""
        return atomic_write(path, self.to_json())

    @classmethod
    def from_dict(cls, d, source: str = "table") -> "LatencyTable":
        """Validate a schema-1 dict (UsageError naming the problem and ``source``)."""
        return _parse(d, source)

    @classmethod
    def load(cls, path) -> "LatencyTable":
        """Read and validate a table file."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise UsageError(f"cannot read latency table {path}: {e.strerror or e}") from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise UsageError(f"latency table {path} is not valid JSON: {e}") from None
        return _parse(d, str(path))


class Grid:
    """Many entries packed into flat arrays: trilinear lookup of (N, C) queries in one pass.

    Column c of a query uses ``entries[c]``.  Channel coordinates must be integers (dense
    per-column maps from channel count to fractional grid index); density uses a shifted,
    concatenated axis so one ``np.interp`` serves every column.
    """

    CHUNK = 2048

    def __init__(self, entries: list[Entry], names: list[str]):
        self.names = list(names)
        c = len(entries)
        shapes = np.array([e.shape for e in entries], dtype=np.intp).reshape(c, 3)
        sizes = shapes.prod(axis=1)
        self.start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
        self.values = np.concatenate([e.mean.ravel() for e in entries]) if c else np.zeros(0)
        strides = np.stack([shapes[:, 1] * shapes[:, 2], shapes[:, 2], np.ones(c, dtype=np.intp)], axis=1)
        self.stride = np.where(shapes > 1, strides, 0)
        self.cap = np.maximum(shapes - 2, 0)
        self.lo = np.zeros((3, c))
        self.hi = np.zeros((3, c))
        self.used = np.zeros((3, c), dtype=bool)
        self.cell = []
        self.frac = []
        self.map_off = []
        for a, name in enumerate(AXES[:2]):
            top = max([1] + [int(e.axes[name][-1]) for e in entries if e.axes[name] is not None])
            cell = np.zeros((c, top + 1), dtype=np.intp)
            frac = np.zeros((c, top + 1))
            for j, e in enumerate(entries):
                ax = e.axes[name]
                if ax is None:
                    continue
                self.used[a, j] = True
                self.lo[a, j], self.hi[a, j] = ax[0], ax[-1]
                f = np.interp(np.arange(top + 1), ax, np.arange(len(ax), dtype=float))
                i = np.minimum(f.astype(np.intp), self.cap[j, a])
                cell[j] = i * self.stride[j, a]
                frac[j] = f - i
            self.cell.append(cell.ravel())
            self.frac.append(frac.ravel())
            self.map_off.append(np.arange(c, dtype=np.intp) * (top + 1))
        groups = {}
        for j, e in enumerate(entries):
            ax = e.axes["density"]
            if ax is None:
                continue
            self.used[2, j] = True
            self.lo[2, j], self.hi[2, j] = ax[0], ax[-1]
            groups.setdefault(tuple(float(x) for x in ax), []).append(j)
        self.density_groups = [(np.array(cols, dtype=np.intp), np.array(ax)) for ax, cols in groups.items()]

    def check(self, out_ch, in_ch, density, first: int = 0) -> None:
        """Raise UsageError naming the first column and value outside its axis.

        ``first`` is the candidate number of row 0 (for the message).
        """
        for a, q in enumerate((out_ch, in_ch, density)):
            tol = 1e-9 * np.maximum(1.0, np.abs(self.hi[a]))
            bad = self.used[a] & ((q < self.lo[a] - tol) | (q > self.hi[a] + tol) | ~np.isfinite(q))
            if a < 2:
                bad |= self.used[a] & (q != np.round(q))
            if bad.any():
                n, j = np.argwhere(bad)[0]
                lo, hi = self.lo[a, j], self.hi[a, j]
                axis = f"[{_fmt(lo)}]" if lo == hi else f"[{_fmt(lo)}, {_fmt(hi)}]"
                what = "an integer in " if a < 2 else ""
                raise UsageError(
                    f"{self.names[j]}: {AXES[a]} {_fmt(q[n, j])} (candidate {first + n}) is outside the "
                    f"table axis; accepted: {what}{axis}"
                )

    def _density_index(self, density: np.ndarray) -> np.ndarray:
        frac = np.zeros(density.shape)
        for cols, ax in self.density_groups:
            frac[:, cols] = _fractional_index(density[:, cols], ax)
        return frac

    def __call__(self, out_ch, in_ch, density, first: int = 0) -> np.ndarray:
        """(N, C) ms for (N, C) query arrays; raises UsageError for off-axis queries."""
        out_ch = np.asarray(out_ch, dtype=float)
        in_ch = np.asarray(in_ch, dtype=float)
        density = np.asarray(density, dtype=float)
        self.check(out_ch, in_ch, density, first)
        n, c = out_ch.shape
        res = np.empty((n, c))
        used = self.used[:2].astype(np.intp)
        for s in range(0, n, self.CHUNK):
            sl = slice(s, s + self.CHUNK)
            base = self.start
            t = []
            for a, q in enumerate((out_ch[sl], in_ch[sl])):
                idx = q.astype(np.intp) * used[a] + self.map_off[a]
                base = base + self.cell[a][idx]
                t.append(self.frac[a][idx])
            fd = self._density_index(density[sl])
            i = np.minimum(fd.astype(np.intp), self.cap[:, 2])
            t.append(fd - i)
            base = base + i * self.stride[:, 2]
            so, si, sd = self.stride[:, 0], self.stride[:, 1], self.stride[:, 2]
            v = self.values
            c00 = _lerp(v[base], v[base + sd], t[2])
            c01 = _lerp(v[base + si], v[base + si + sd], t[2])
            c10 = _lerp(v[base + so], v[base + so + sd], t[2])
            c11 = _lerp(v[base + so + si], v[base + so + si + sd], t[2])
            res[sl] = _lerp(_lerp(c00, c01, t[1]), _lerp(c10, c11, t[1]), t[0])
        return res


def _fractional_index(q: np.ndarray, ax: np.ndarray) -> np.ndarray:
    """Position of in-range values ``q`` on the increasing axis ``ax`` (0 .. len(ax) - 1)."""
    if len(ax) == 1:
        return np.zeros_like(q)
    step = np.diff(ax)
    if np.allclose(step, step[0], rtol=1e-9, atol=0):
        return np.clip((q - ax[0]) / step[0], 0, len(ax) - 1)
    return np.interp(q, ax, np.arange(len(ax), dtype=float))


def _lerp(a, b, t):
    return a + (b - a) * t


def _fmt(x) -> str:
    x = float(x)
    return str(int(x)) if x == int(x) else f"{x:g}"


def _num(v):
    if isinstance(v, (int, np.integer)):
        return int(v)
    return float(f"{float(v):.6g}")


def _entry_dict(e: Entry, keys: tuple) -> dict:
    d = dict(zip(keys, e.key))
    if e.key[len(keys)]:  # written only where set: entries of ReLU-class layers stay as they were
        d["act"] = e.key[len(keys)]
    if keys is OP_KEYS:
        d["axes"] = {"channels": [int(x) for x in e.axes["out_ch"]]}
        shape = (e.shape[0],)
    else:
        d["axes"] = {
            "out_ch": [int(x) for x in e.axes["out_ch"]],
            "in_ch": None if e.axes["in_ch"] is None else [int(x) for x in e.axes["in_ch"]],
            "density": None if e.axes["density"] is None else [_num(x) for x in e.axes["density"]],
        }
        shape = e.shape
    d["mean"] = _nested(e.mean.reshape(shape), float)
    d["std"] = _nested(e.std.reshape(shape), float)
    d["count"] = _nested(e.count.reshape(shape), int)
    return d


def _nested(a: np.ndarray, kind) -> list:
    if kind is int:
        return a.astype(int).tolist()
    return np.vectorize(lambda x: float(f"{x:.6g}"), otypes=[float])(a).tolist() if a.size else a.tolist()


def _parse(d, source: str) -> LatencyTable:
    def fail(msg):
        raise UsageError(f"latency table {source}: {msg}")

    if not isinstance(d, dict):
        fail(f"top level must be a JSON object, got {type(d).__name__}")
    if d.get("format") != FORMAT:
        fail(f"'format' must be {FORMAT!r}, got {d.get('format')!r}")
    if d.get("version") != VERSION:
        fail(f"unsupported schema version {d.get('version')!r}; this jcw reads version {VERSION}")
    for name in ("device", "threads", "provenance", "layers", "ops"):
        if name not in d:
            fail(f"missing field {name!r}")
    if not isinstance(d["device"], str) or not d["device"]:
        fail("'device' must be a non-empty string")
    if not isinstance(d["threads"], int) or d["threads"] < 1:
        fail(f"'threads' must be a positive integer, got {d['threads']!r}")
    prov = d["provenance"]
    if not isinstance(prov, dict) or prov.get("kind") not in PROVENANCE_KINDS:
        fail(f"'provenance.kind' must be one of {PROVENANCE_KINDS}, got {prov.get('kind') if isinstance(prov, dict) else prov!r}")
    models = d.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        fail("'models' must be a list of strings")
    layers = _parse_entries(d["layers"], LAYER_KEYS, "layers", fail)
    ops = _parse_entries(d["ops"], OP_KEYS, "ops", fail)
    return LatencyTable(
        device=d["device"], threads=d["threads"], provenance=prov, layers=layers, ops=ops,
        models=models,
    )


def _parse_entries(items, keys: tuple, section: str, fail) -> dict:
    if not isinstance(items, list):
        fail(f"'{section}' must be a list")
    out = {}
    for n, item in enumerate(items):
        where = f"{section}[{n}]"
        if not isinstance(item, dict):
            fail(f"{where} must be an object")
        for k in (*keys, "axes", "mean", "std", "count"):
            if k not in item:
                fail(f"{where} is missing field {k!r}")
        if not isinstance(item["kind"], str):
            fail(f"{where}.kind must be a string")
        for k in keys[1:]:
            if not isinstance(item[k], int) or isinstance(item[k], bool) or item[k] < 0:
                fail(f"{where}.{k} must be an integer >= 0, got {item[k]!r}")
        act = item.get("act", "")
        if act not in ("", *ACTS) or (act in RELU_CLASS and item["kind"] != "act"):
            fail(f"{where}.act must be one of {[a for a in ACTS if a not in RELU_CLASS]} (absent: none, relu "
                 f"or relu6; an act op may name those too), got {act!r}")
        key = tuple(item[k] for k in keys) + (act,)
        where = f"{where} ({describe_key(key)})"
        if key in out:
            fail(f"{where} appears twice")
        axes_in = item["axes"]
        names = ("channels",) if keys is OP_KEYS else AXES
        if not isinstance(axes_in, dict) or set(axes_in) != set(names):
            fail(f"{where}.axes must have exactly the keys {list(names)}")
        axes = {"out_ch": None, "in_ch": None, "density": None}
        for name in names:
            ax = axes_in[name]
            if ax is None and name in ("in_ch", "density"):
                continue
            target = "out_ch" if name == "channels" else name
            axes[target] = _axis(ax, f"{where}.axes.{name}", name != "density", fail)
        entry = Entry(key=key, axes=axes, mean=None, std=None, count=None)
        shape = entry.shape
        want = shape[:1] if keys is OP_KEYS else shape
        arrays = {}
        for k in ("mean", "std", "count"):
            try:
                a = np.array(item[k], dtype=float)
            except (TypeError, ValueError):
                fail(f"{where}.{k} must be a nested list of numbers")
            if a.shape != want:
                fail(f"{where}.{k} has shape {a.shape}, expected {want} from the axes")
            if not np.isfinite(a).all():
                fail(f"{where}.{k} contains NaN or infinite values")
            if (a < 0).any():
                fail(f"{where}.{k} contains negative values")
            arrays[k] = a.reshape(shape)
        entry.mean, entry.std, entry.count = arrays["mean"], arrays["std"], arrays["count"]
        out[key] = entry
    return out


def _axis(ax, where: str, integral: bool, fail) -> np.ndarray:
    if not isinstance(ax, list) or not ax:
        fail(f"{where} must be a non-empty list")
    try:
        a = np.array(ax, dtype=float)
    except (TypeError, ValueError):
        fail(f"{where} must contain numbers")
    if a.ndim != 1 or not np.isfinite(a).all():
        fail(f"{where} must be a flat list of finite numbers")
    if (a < 0).any():
        fail(f"{where} contains negative values")
    if (np.diff(a) <= 0).any():
        fail(f"{where} is not strictly increasing: {ax}")
    if integral:
        if (a != np.round(a)).any():
            fail(f"{where} must contain integers: {ax}")
        if a[0] < 1:
            fail(f"{where} must start at >= 1 channel (no zero anchor): {ax}")
        return a.astype(np.int64)
    if a[-1] > 1:
        fail(f"{where} (density, fraction of weights kept) must lie in [0, 1]: {ax}")
    return a
