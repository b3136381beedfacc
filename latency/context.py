"""Context networks: whole pruned networks built from a NetSpec (numpy + onnx, no torch) whose
per-step engine times fill a LatencyTable's grid points.

A layer timed alone runs with its weights and input warmer than inside a network, where every
other layer evicts them; on a mobile-style network of small, memory-bound layers that made
one-op tables under-predict whole networks by 15-20 %. So every grid point is timed where it
will be used: as a step of a whole network.

**Graph.** A NetSpec lists layers in forward order with the coupling group (or concatenated
parts) and resolution of their input and output, and the non-conv ops separately. ``build``
rebuilds the graph from a few rules (its docstring): a layer reads the newest tensor of its input
channels at its input size, made when missing by the pending pool or concat that produces it;
pending act and mul ops (an SE gate's Mul) run on a tensor before it is read; a non-depthwise
layer whose output group already has a tensor of that size closes a residual block (Add). Every
layer, add, mul and act op is followed by the activation its spec records, as torch exports it.
That reproduces ResNet (identity, downsample, bottleneck), MobileNetV1/V2/V3, EfficientNet, VGG,
branches joined by a concat and hidden linears; a spec it cannot place raises UsageError.

**Design.** Each coupling group gets a colour so that a layer's input and output groups differ
(and the parts of a concatenation differ among themselves; greedy colouring); a run sets one
channel ratio per colour (frozen groups stay at full width) and one density for every layer.
The colour ratios come from a pairwise-covering array (a Latin square for up to three colours:
every pair of colours sees every pair of ratio levels), crossed with every density level. So
each layer meets every (out_ch, in_ch, density) point of its grid, with its neighbours at
varied sizes, in ``len(ratios)^2 x len(densities)`` runs for the whole network.

All layers of a run share its density, so a run streams the weights an arch of that density
would: a point is timed under the cache pressure of the archs that use it. Densities cycled
across the layers of each run made every network a mix of sparse and dense layers, and the
dense points of resnet18's 3x3 512->512 convs ran with their 9.4 MB of weights still cached
(2.2 ms) while the full-width network, streaming 44 MB a pass, runs them in 3.2-3.4 ms: the
table predicted it 11 % fast (docs/latency.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from jcw.core.errors import UsageError
from jcw.core.netspec import CONCAT
from latency.lut import space_channels


def kept(full: int, ratio: float) -> int:
    """Channels kept at ``ratio`` (the search space's rule: clamp(ceil(full / 4 * r) * 4, 4, full))."""
    return space_channels(full, (ratio,))[0]


def colour_groups(spec, colours: int = 1) -> dict[int, int]:
    """Colour of every coupling group such that each layer's input and output groups differ (every
    part of a concatenated input, and the parts of a concatenation among themselves).

    Groups are coloured in order, cycling through at least ``colours`` colours (more neighbours
    at different sizes make a context network more like a random arch), skipping any colour a
    neighbour already has.
    """
    neighbours: dict[int, set] = {g.id: set() for g in spec.groups}

    def apart(a: int, b: int) -> None:
        if a >= 0 and b >= 0 and a != b:
            neighbours.setdefault(a, set()).add(b)
            neighbours.setdefault(b, set()).add(a)

    for x in spec.layers:
        for g, _ in x.input_parts:
            apart(x.group, g)
    # The parts of a concatenation vary independently too (their sums fill the reader's in_ch axis).
    for parts in [x.in_parts for x in spec.layers] + [o.parts for o in spec.ops]:
        for i, (a, _) in enumerate(parts):
            for b, _ in parts[i + 1:]:
                apart(a, b)
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
    frozen = {g.id for g in spec.groups if g.frozen}  # kept at full width, as every arch keeps them
    runs = []
    for k in range(len(densities)):
        for row in rows:
            dens = {i: float(densities[k]) for i in range(len(spec.layers))}
            runs.append(Run({g: full[g] if g in frozen else kept(full[g], ratios[row[c]]) for g, c in colour.items()},
                            dens))
    return runs


@dataclass
class Placement:
    """Where the table's items sit in a context network's ONNX graph.

    ``layers``: spec layer index -> (node name, out_ch, in_ch, density or None);
    ``pools``: spec op index -> names of the nodes whose engine steps carry the op, for every op
    timed as its own step (max and average pools, mul, concat, standalone act; an activation
    applied to a mul's result is a second step); a name the engine's plan lacks was fused into
    its producer; ``op_channels``: spec op index -> the op's channel count in this network;
    ``adds``: spec op index -> (channels, names of the conv nodes whose outputs it adds: the
    engine fuses the add into one of them).
    """

    layers: dict[int, tuple] = field(default_factory=dict)
    pools: dict[int, tuple] = field(default_factory=dict)
    adds: dict[int, tuple] = field(default_factory=dict)
    op_channels: dict[int, int] = field(default_factory=dict)


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


# ONNX opset a context network needs for an activation (the lowest that has its operator).
_ACT_OPSET = {"hardswish": 14, "gelu": 20}
_ACT_OPS = {"hardswish": ("HardSwish", {}), "hardsigmoid": ("HardSigmoid", {"alpha": 1.0 / 6.0, "beta": 0.5}),
            "sigmoid": ("Sigmoid", {}), "gelu": ("Gelu", {}), "leaky_relu": ("LeakyRelu", {"alpha": 0.01})}


def activation_nodes(tensor: str, act: str, out: str | None = None) -> tuple[list, dict, int]:
    """(ONNX nodes computing ``act`` of ``tensor`` the way torch exports it, the initializers they read,
    the opset they need).  The last node writes ``out`` (default ``<tensor>.<act>``); "none": no node.

    relu: Relu; relu6: Clip(0, 6); hardswish: HardSwish; hardsigmoid: HardSigmoid(alpha 1/6, beta
    1/2) (torch's relu6(x + 3) / 6); sigmoid: Sigmoid; silu: x * Sigmoid(x) (a Sigmoid and a Mul);
    gelu: Gelu (opset 20); leaky_relu: LeakyRelu(0.01) (torch's default slope).
    """
    from onnx import helper

    if act == "none":
        return [], {}, 13
    out = out or f"{tensor}.{act}"
    if act == "relu":
        return [helper.make_node("Relu", [tensor], [out], name=out)], {}, 13
    if act == "relu6":
        inits = {"relu6.lo": np.array(0.0, dtype=np.float32), "relu6.hi": np.array(6.0, dtype=np.float32)}
        return [helper.make_node("Clip", [tensor, "relu6.lo", "relu6.hi"], [out], name=out)], inits, 13
    if act == "silu":
        sig = f"{tensor}.sigmoid"
        return [helper.make_node("Sigmoid", [tensor], [sig], name=sig),
                helper.make_node("Mul", [tensor, sig], [out], name=out)], {}, 13
    op_type, attrs = _ACT_OPS[act]
    return [helper.make_node(op_type, [tensor], [out], name=out, **attrs)], {}, _ACT_OPSET.get(act, 13)


def _key(group: int, parts: tuple):
    """How the builder names a tensor's channels: its group, or the parts of a concatenation."""
    return tuple(parts) if group == CONCAT else group


def build(spec, run: Run, rng: np.random.Generator):
    """(onnx.ModelProto, Placement) of ``spec`` pruned as ``run`` says, with random weights.

    The graph is rebuilt from the spec's layers (in forward order) and ops with these rules:

    - a layer reads the newest tensor of its input channels (its group, or its concatenated
      parts) at its input size; when there is none it is made: by the pending pool of those
      channels whose output has that size (max, windowed average, or the global average pool
      for size 1: an SE block's squeeze or the classifier's), or by the pending concat of those
      parts (each part read the same way);
    - before a tensor is read, the pending "act" and "mul" ops on it are applied, in spec order:
      a mul multiplies it by its gate, the (C, 1, 1) output of the layer of the same group at
      1x1 that came after it (squeeze-excitation), and waits until that gate exists;
    - a non-depthwise layer whose output group already has a tensor of its size combines the
      two with the pending add of that group and size (a residual block), else with a pending
      mul there (elementwise);
    - every layer, add, mul and act op is followed by the activation its spec records: Relu,
      Clip(0, 6), HardSwish, HardSigmoid(1/6, 1/2), Sigmoid, SiLU as x * Sigmoid(x), Gelu,
      LeakyRelu(0.01), the way torch exports them;
    - fc layers read a flattened tensor (a Flatten after a pool), convs a 4-d one (a Reshape
      after an fc); the last layer (the classifier) makes the output ``y``.

    That reproduces ResNet (identity, downsample and bottleneck blocks), MobileNetV1/V2/V3,
    EfficientNet, VGG, concatenations of branches and hidden linear layers; a spec it cannot
    place raises UsageError naming what is left.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], {}
    place = Placement()
    latest: dict[tuple, str] = {}          # (channels key, size) -> newest tensor
    derived: set[tuple] = set()            # entries of latest made by a pool (stale once their source changes)
    flat: set[str] = set()                 # tensors that are 2-d (N, C): fc outputs, flattened pools
    producer: dict[str, str] = {}          # tensor -> conv node that made it
    gates: dict[int, str] = {}             # group -> (N, C, 1, 1) gate of its pending mul
    made: dict[str, int] = {}              # tensor -> order in which it was stored
    widths: dict[str, int] = {}            # tensor of a coupling group -> its channels
    pending = list(enumerate(spec.ops))    # ops not placed yet, in spec order
    ch = dict(run.channels)
    img = spec.layers[0].in_ch
    latest[(-1, spec.resolution)] = "x"
    opset = [13]

    def width(group: int, parts: tuple, full: int) -> int:
        """Channels of a tensor in this network: kept channels of its group(s), full for group -1."""
        if group == CONCAT:
            return sum(c if g < 0 else ch[g] for g, c in parts)
        return full if group < 0 else ch[group]

    def node(op_type: str, inputs: list, name: str, **attrs) -> str:
        nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def activate(tensor: str, act: str) -> str:
        """``tensor`` after the spec's activation, as torch exports it."""
        made, needs, version = activation_nodes(tensor, act)
        nodes.extend(made)
        inits.update(needs)
        opset[0] = max(opset[0], version)
        return made[-1].output[0] if made else tensor

    def as4d(tensor: str) -> str:
        if tensor not in flat:
            return tensor
        inits.setdefault("shape.nc11", np.array([1, -1, 1, 1], dtype=np.int64))
        return node("Reshape", [tensor, "shape.nc11"], f"{tensor}.4d")

    def as2d(tensor: str) -> str:
        if tensor in flat:
            return tensor
        name = "flat" if "flat" not in flat else f"{tensor}.flat"
        nodes.append(helper.make_node("Flatten", [tensor], [name], name="flatten" if name == "flat" else name, axis=1))
        flat.add(name)
        return name

    def store(key, size: int, tensor: str, made_by_pool: bool = False) -> None:
        for k in [k for k in derived if k[0] == key and k[1] < size]:
            latest.pop(k, None)
            derived.discard(k)
        latest[(key, size)] = tensor
        (derived.add if made_by_pool else derived.discard)((key, size))
        made[tensor] = len(made)
        if not isinstance(key, tuple) and key >= 0:
            widths[tensor] = ch[key]

    def op_at(kind_ok, key, size, *, out: bool = False):
        """The first pending op with ``kind_ok(op)`` on channels ``key`` at input (or output) size ``size``."""
        for k, (i, o) in enumerate(pending):
            if kind_ok(o) and _key(o.group, o.parts) == key and (o.out_res if out else o.in_res) == size:
                return k
        return None

    def placed(k: int, names: tuple, channels: int) -> None:
        i, _ = pending.pop(k)
        place.pools[i] = names
        place.op_channels[i] = channels

    def pool(i: int, o, src: str) -> str:
        src = as4d(src)
        window = dict(kernel_shape=[o.kernel] * 2, strides=[o.stride] * 2, pads=[o.padding] * 4)
        if o.kind == "maxpool":
            return node("MaxPool", [src], f"maxpool{i}", **window)
        if o.kernel == 0:
            return node("GlobalAveragePool", [src], f"avgpool{i}")
        return node("AveragePool", [src], f"avgpool{i}", **window)

    def make(key, size: int, who: str, channels: int | None = None) -> str:
        """A tensor of channels ``key`` at ``size`` that does not exist yet: from a pool or a concat
        (``channels``: its width, needed for channels of group -1)."""
        if isinstance(key, tuple):
            k = op_at(lambda o: o.kind == "concat", key, size)
            if k is not None:
                i, o = pending[k]
                parts = [resolve(g, size, f"concat {i}", c) for g, c in key]
                name = node("Concat", parts, f"concat{i}", axis=1)
                placed(k, (name,), width(CONCAT, key, 0))
                store(key, size, name)
                return name
        k = op_at(lambda o: o.kind in ("maxpool", "avgpool") and o.in_res != size, key, size, out=True)
        if k is not None:
            i, o = pending[k]
            name = pool(i, o, resolve(key, o.in_res, f"{o.kind} {i}", width(o.group, o.parts, o.channels)))
            placed(k, (name,), width(o.group, o.parts, o.channels))
            store(key, size, name, made_by_pool=True)
            return name
        if key == -1 and channels is not None:
            # Channels made by an op jcw cannot follow (the spec does not say which): the newest tensor
            # of that size and width stands in for them; the op itself is not reproduced.
            stand_in = [t for (k, r), t in latest.items() if r == size and k != -1 and widths.get(t) == channels]
            if stand_in:
                return max(stand_in, key=lambda t: made[t])
        raise UsageError(f"{spec.model}: no tensor of {'parts ' if isinstance(key, tuple) else 'group '}{key} at size "
                         f"{size} for {who}")

    def resolve(key, size: int, who: str, channels: int | None = None) -> str:
        """The tensor ``who`` reads: the newest one of ``key`` at ``size`` (made when missing), after the
        pending act and mul ops on it that can run."""
        # A larger tensor of the same channels whose pending act or mul can run now is brought up to date
        # first: what was pooled from it before is stale then (store drops it), and is pooled again.
        for r in sorted({o.in_res for _, o in pending if o.in_res > size and _key(o.group, o.parts) == key
                         and (o.kind == "act" or (o.kind == "mul" and key in gates))}, reverse=True):
            if (key, r) in latest:
                resolve(key, r, who)
        tensor = latest.get((key, size)) or make(key, size, who, channels)
        while True:
            k = op_at(lambda o: o.kind in ("act", "mul") or (o.kind in ("maxpool", "avgpool") and o.out_res == size),
                      key, size)
            if k is None:
                break
            i, o = pending[k]
            channels = width(o.group, o.parts, o.channels)
            if o.kind in ("maxpool", "avgpool"):  # a pool that keeps the size (a global pool of a 1x1 map)
                out = pool(i, o, tensor)
                placed(k, (out,), channels)
            elif o.kind == "act":
                out = activate(tensor, o.act)
                if out == tensor:  # act "none": nothing to run
                    placed(k, (), channels)
                    continue
                placed(k, (out,), channels)
            else:
                if isinstance(key, tuple) or key not in gates:
                    break  # its gate comes later
                name = node("Mul", [tensor, as4d(gates.pop(key))], f"mul{i}")
                out = activate(name, o.act)
                placed(k, (name,) + ((out,) if out != name else ()), channels)
            tensor = out
            store(key, size, tensor)
        return tensor

    out_shape = None
    for li, x in enumerate(spec.layers):
        last = li == len(spec.layers) - 1
        in_key = _key(x.in_group, x.in_parts)
        cin = width(x.in_group, x.in_parts, x.in_ch)
        if x.kind == "fc":
            src = as2d(resolve(in_key, 1, f"fc {x.name!r}", cin))
            cout = width(x.group, (), x.out_ch)
            w = rng.standard_normal((cout, cin), dtype=np.float32) * np.float32(math.sqrt(1.0 / cin))
            inits[f"{x.name}.w"], inits[f"{x.name}.b"] = w, rng.standard_normal(cout, dtype=np.float32)
            out = "y" if last and x.act == "none" else f"{x.name}.out"
            nodes.append(helper.make_node("Gemm", [src, f"{x.name}.w", f"{x.name}.b"], [out], name=x.name, transB=1))
            place.layers[li] = (x.name, cout, cin, None)
            out = activate(out, x.act)
            flat.add(out)
            if last:
                if out != "y":
                    node("Identity", [out], "y")
                out_shape = [1, cout]
                break
            if any(o.kind == "mul" and o.group == x.group and o.in_res > 1 for _, o in pending):
                gates[x.group] = out  # a squeeze-excitation gate made by linear layers
            else:
                store(x.group, 1, out)
            continue
        src = as4d(resolve(in_key, x.in_res, f"layer {x.name!r}", cin))
        d = None if x.kind == "depthwise" else run.density[li]
        cout = cin if x.kind == "depthwise" else width(x.group, (), x.out_ch)
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
        if last:
            raise UsageError(f"{spec.model}: the spec has no fc layer to end the network")
        key = (x.group, x.out_res)
        if x.out_res == 1 and x.kind != "depthwise" and any(o.kind == "mul" and o.group == x.group and o.in_res > 1
                                                            for _, o in pending):
            gates[x.group] = activate(conv, x.act)  # a squeeze-excitation gate: for the mul, not for readers
            continue
        skip = latest.get(key) if x.kind != "depthwise" else None
        add = op_at(lambda o: o.kind == "add", x.group, x.out_res)
        mul = op_at(lambda o: o.kind == "mul", x.group, x.out_res)
        if skip is not None and (add is not None or mul is not None):
            k = add if add is not None else mul
            i, op = pending.pop(k)
            name = f"{op.kind}{i}"
            nodes.append(helper.make_node(op.kind.capitalize(), [conv, skip], [name], name=name))
            if op.kind == "add":
                place.adds[i] = (cout, tuple(p for p in (producer.get(conv), producer.get(skip)) if p))
                store(x.group, x.out_res, activate(name, op.act))
            else:
                out = activate(name, op.act)
                place.pools[i] = (name,) + ((out,) if out != name else ())
                place.op_channels[i] = cout
                store(x.group, x.out_res, out)
        else:
            store(x.group, x.out_res, activate(conv, x.act))
            producer[latest[key]] = x.name
    else:
        raise UsageError(f"{spec.model}: the spec has no fc layer to end the network")
    if pending:
        left = ", ".join(f"{o.kind} {i} ({'parts ' + str(o.parts) if o.parts else 'group ' + str(o.group)} @{o.in_res})"
                         for i, o in pending)
        raise UsageError(f"{spec.model}: could not place ops {left} in the rebuilt graph")
    graph = helper.make_graph(
        nodes, f"{spec.model}-context",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, img, spec.resolution, spec.resolution])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset[0])], ir_version=onnx.IR_VERSION)
    return model, place
