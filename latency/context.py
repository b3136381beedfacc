"""Context networks: whole pruned networks built from a NetSpec (numpy + onnx, no torch) whose
per-step engine times fill a LatencyTable's grid points.

A layer timed alone runs with its weights and input warmer than inside a network, where every
other layer evicts them; on a mobile-style network of small, memory-bound layers that made
one-op tables under-predict whole networks by 15-20 %. So every grid point is timed where it
will be used: as a step of a whole network.

**Graph.** A NetSpec lists layers in forward order with the coupling group and resolution of
their input and output, and the non-conv ops (pools, residual adds) separately. The graph is
rebuilt with one rule: a layer reads the latest tensor of its input group at its input size
(made by a max pool when only a larger one exists, by the global average pool for the fc), and
a non-depthwise layer whose output group already has a tensor of that size closes a residual
block: the two are added. Every layer and add is followed by the activation its spec records
(ReLU, ReLU6 or none: MobileNetV2's linear bottlenecks, the conv before a residual add). That
reproduces ResNet (identity and downsample blocks), MobileNetV1/V2 and VGG exactly; a spec it
cannot place raises UsageError.

**Design.** Each coupling group gets a colour so that a layer's input and output groups differ
(greedy colouring); a run sets one channel ratio per colour and one density for every layer.
The colour ratios come from a pairwise-covering array (a Latin square for up to three colours:
every pair of colours sees every pair of ratio levels), crossed with every density level. So
each layer meets every (out_ch, in_ch, density) point of its grid, with its neighbours at
varied sizes, in ``len(ratios)^2 x len(densities)`` runs for the whole network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from latency.lut import space_channels
from jcw.core.errors import UsageError


def kept(full: int, ratio: float) -> int:
    """Channels kept at ``ratio`` (the search space's rule: clamp(ceil(full / 4 * r) * 4, 4, full))."""
    return space_channels(full, (ratio,))[0]


def colour_groups(spec, colours: int = 1) -> dict[int, int]:
    """Colour of every coupling group such that each layer's input and output groups differ.

    Groups are coloured in order, cycling through at least ``colours`` colours (more neighbours
    at different sizes make a context network more like a random arch), skipping any colour a
    neighbour already has.
    """
    neighbours: dict[int, set] = {g.id: set() for g in spec.groups}
    for x in spec.layers:
        if x.group >= 0 and x.in_group >= 0 and x.group != x.in_group:
            neighbours.setdefault(x.group, set()).add(x.in_group)
            neighbours.setdefault(x.in_group, set()).add(x.group)
    colour: dict[int, int] = {}
    for n, g in enumerate(sorted(neighbours)):
        taken = {colour[m] for m in neighbours[g] if m in colour}
        free = [c % colours for c in range(n, n + colours) if c % colours not in taken]
        colour[g] = free[0] if free else next(c for c in range(colours, colours + len(taken) + 1) if c not in taken)
    return colour


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


def pair_covering(levels: int, factors: int) -> np.ndarray:
    """(rows, factors) level indices in which every pair of factors takes every pair of levels.

    Up to three factors: the Latin square (j, i, i + j mod n), n^2 rows. More: the orthogonal
    array (j, i, i + j, i + 2j, ...) mod p over the smallest prime p >= n that has enough columns,
    with levels folded mod n (p^2 rows).
    """
    if levels < 1:
        raise ValueError(f"need at least one level, got {levels}")
    if factors <= 1:
        return np.arange(levels).reshape(levels, 1)[:, :factors]
    if factors <= 3:
        i, j = (a.ravel() for a in np.meshgrid(np.arange(levels), np.arange(levels), indexing="ij"))
        return np.stack([j, i, (i + j) % levels][:factors], axis=1).astype(np.int64)
    p = max(levels, factors - 1)
    while not _is_prime(p):
        p += 1
    i, j = (a.ravel() for a in np.meshgrid(np.arange(p), np.arange(p), indexing="ij"))
    cols = [j] + [(i + c * j) % p for c in range(p)]
    return (np.stack(cols[:factors], axis=1) % levels).astype(np.int64)


# Channel-ratio colours of a design: neighbours at up to this many different sizes per network.
# A pairwise-covering array over 11 ratio levels (prime) has 12 columns in 121 rows, so the full
# grid costs no more runs than with 2 colours; the quick grid's 6 levels go to 7 (49 rows).
COLOURS = 6


@dataclass
class Run:
    """One context network: kept channels per coupling group, density per layer (by spec index)."""

    channels: dict[int, int]
    density: dict[int, float]

    @classmethod
    def full_width(cls, spec) -> "Run":
        """The unpruned network: every group at its full channels, every layer dense."""
        return cls({g.id: g.channels for g in spec.groups}, {i: 1.0 for i in range(len(spec.layers))})


def design(spec, ratios, densities) -> list[Run]:
    """The runs whose networks put every layer at every point of its grid (see module docstring)."""
    colour = colour_groups(spec, COLOURS)
    rows = pair_covering(len(ratios), max(colour.values(), default=-1) + 1)
    full = {g.id: g.channels for g in spec.groups}
    runs = []
    for k in range(len(densities)):
        for row in rows:
            dens = {i: float(densities[(k + i) % len(densities)]) for i in range(len(spec.layers))}
            runs.append(Run({g: kept(full[g], ratios[row[c]]) for g, c in colour.items()}, dens))
    return runs


@dataclass
class Placement:
    """Where the table's items sit in a context network's ONNX graph.

    ``layers``: spec layer index -> (node name, out_ch, in_ch, density or None);
    ``pools``: spec op index -> node name; ``adds``: spec op index -> (channels, names of the conv
    nodes whose outputs it adds: the engine fuses the add into one of them).
    """

    layers: dict[int, tuple] = field(default_factory=dict)
    pools: dict[int, str] = field(default_factory=dict)
    adds: dict[int, tuple] = field(default_factory=dict)


def block_pruned(shape: tuple, density: float, rng: np.random.Generator) -> np.ndarray:
    """Random OIHW float32 weights keeping round(density * blocks) random 4x1 blocks along out_ch.

    Scaled by sqrt(2 / kept fan-in) (He), so activations neither blow up nor decay into slow
    float denormals through a deep network.
    """
    out_ch, rest = shape[0], int(np.prod(shape[1:]))
    rows = -(-out_ch // 4)
    blocks = rows * rest
    keep = np.zeros(blocks, dtype=bool)
    keep[rng.permutation(blocks)[: int(round(density * blocks))]] = True
    mask = np.repeat(keep.reshape(rows, 1, rest), 4, axis=1).reshape(rows * 4, rest)[:out_ch]
    scale = np.float32(math.sqrt(2.0 / max(density * rest, 1.0)))
    w = rng.standard_normal((out_ch, rest), dtype=np.float32) * scale * mask
    return w.reshape(shape)


def build(spec, run: Run, rng: np.random.Generator):
    """(onnx.ModelProto, Placement) of ``spec`` pruned as ``run`` says, with random weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], {}
    place = Placement()
    latest: dict[tuple, str] = {}          # (group, size) -> newest tensor
    producer: dict[str, str] = {}          # tensor -> conv node that made it
    ops = list(enumerate(spec.ops))
    pools = [(i, o) for i, o in ops if o.kind == "maxpool"]
    adds = [(i, o) for i, o in ops if o.kind == "add"]
    gap = [(i, o) for i, o in ops if o.kind == "avgpool"]
    ch = dict(run.channels)
    img = spec.layers[0].in_ch
    latest[(-1, spec.resolution)] = "x"
    ch[-1] = img

    def activate(tensor: str, act: str) -> str:
        """``tensor`` after the spec's activation (ReLU, or ReLU6 as Clip(0, 6) the way torch exports it)."""
        if act == "none":
            return tensor
        if act == "relu":
            nodes.append(helper.make_node("Relu", [tensor], [f"{tensor}.relu"], name=f"{tensor}.relu"))
            return f"{tensor}.relu"
        for bound, value in (("lo", 0.0), ("hi", 6.0)):
            inits.setdefault(f"relu6.{bound}", np.array(value, dtype=np.float32))
        nodes.append(helper.make_node("Clip", [tensor, "relu6.lo", "relu6.hi"], [f"{tensor}.relu6"],
                                      name=f"{tensor}.relu6"))
        return f"{tensor}.relu6"

    def read(group: int, size: int, who: str) -> str:
        if (group, size) in latest:
            return latest[(group, size)]
        for k, (i, o) in enumerate(pools):
            if o.group == group and o.out_res == size and (group, o.in_res) in latest:
                name = f"maxpool{i}"
                nodes.append(helper.make_node("MaxPool", [latest[(group, o.in_res)]], [name], name=name,
                                              kernel_shape=[o.kernel] * 2, strides=[o.stride] * 2,
                                              pads=[o.padding] * 4))
                place.pools[i] = name
                pools.pop(k)
                latest[(group, size)] = name
                return name
        raise UsageError(f"{spec.model}: no tensor of group {group} at size {size} for {who}")

    for li, x in enumerate(spec.layers):
        d = None if x.kind in ("depthwise", "fc") else run.density[li]
        cin = ch[x.in_group]
        if x.kind == "fc":
            src = next(((i, o) for i, o in gap if o.group == x.in_group), None)
            if src is None:
                raise UsageError(f"{spec.model}: no global average pool feeds fc {x.name!r}")
            i, o = src
            feat = read(x.in_group, o.in_res, f"avgpool {i}")
            nodes.append(helper.make_node("GlobalAveragePool", [feat], [f"avgpool{i}"], name=f"avgpool{i}"))
            nodes.append(helper.make_node("Flatten", [f"avgpool{i}"], ["flat"], name="flatten", axis=1))
            w = rng.standard_normal((x.out_ch, cin), dtype=np.float32) * np.float32(math.sqrt(1.0 / cin))
            inits[f"{x.name}.w"], inits[f"{x.name}.b"] = w, rng.standard_normal(x.out_ch, dtype=np.float32)
            nodes.append(helper.make_node("Gemm", ["flat", f"{x.name}.w", f"{x.name}.b"], ["y"], name=x.name,
                                          transB=1))
            place.pools[i] = f"avgpool{i}"
            place.layers[li] = (x.name, x.out_ch, cin, None)
            out_shape = [1, x.out_ch]
            break
        src = read(x.in_group, x.in_res, f"layer {x.name!r}")
        cout = cin if x.kind == "depthwise" else ch[x.group]
        k = x.kernel
        if x.kind == "depthwise":
            w = rng.standard_normal((cout, 1, k, k), dtype=np.float32) * np.float32(math.sqrt(2.0 / (k * k)))
            groups = cout
        else:
            w = block_pruned((cout, cin // x.groups, k, k), d, rng)
            groups = x.groups
        inits[f"{x.name}.w"] = w
        inits[f"{x.name}.b"] = 0.1 * rng.standard_normal(cout, dtype=np.float32)
        conv = f"{x.name}.out"
        nodes.append(helper.make_node("Conv", [src, f"{x.name}.w", f"{x.name}.b"], [conv], name=x.name,
                                      strides=[x.stride] * 2, pads=[x.padding] * 4, group=groups))
        producer[conv] = x.name
        place.layers[li] = (x.name, cout, cin, d)
        key = (x.group, x.out_res)
        skip = latest.get(key) if x.kind != "depthwise" else None
        match = next((k2 for k2, (i, o) in enumerate(adds) if o.group == x.group and o.in_res == x.out_res), None)
        if skip is not None and match is not None:
            i, op = adds.pop(match)
            name = f"add{i}"
            nodes.append(helper.make_node("Add", [conv, skip], [name], name=name))
            place.adds[i] = (cout, tuple(p for p in (producer.get(conv), producer.get(skip)) if p))
            latest[key] = activate(name, op.act)
        else:
            latest[key] = activate(conv, x.act)
            producer[latest[key]] = x.name
    else:
        raise UsageError(f"{spec.model}: the spec has no fc layer to end the network")
    left = [f"{o.kind} {i}" for i, o in (*pools, *adds)] + [f"avgpool {i}" for i, _ in gap if i not in place.pools]
    if left:
        raise UsageError(f"{spec.model}: could not place ops {', '.join(left)} in the rebuilt graph")
    graph = helper.make_graph(
        nodes, f"{spec.model}-context",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, img, spec.resolution, spec.resolution])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=onnx.IR_VERSION), place
