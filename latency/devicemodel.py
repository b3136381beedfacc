"""Cost model of our engine on Cortex-A53 / A72 boards, from llvm-mca cycle counts of our own NEON
microkernels plus a memory roofline; writes the shipped modelled tables and builds tables on demand.

Per conv at a grid point (out_ch, in_ch, density), on one core:

    compute cycles = inner-loop iterations x cycles_per_iter + outer units x overhead_cycles

with the microkernel the engine runs for that layer (``kernel_for``) and both figures from
``kernel_cycles.json`` (``python benchmarks/arm_mca.py --json``: llvm-mca's model of the core run on
the steady-state loop of each NEON microkernel and on the code around it).  Memory time is the bytes
the layer moves (activations in and out, packed weights, padded input planes) over the board's
sustained bandwidth (``Board.bandwidth_gbs``, sources in ``Board.bandwidth_source``).  A layer
costs max(compute, memory) + the per-op dispatch cost; with T threads the compute is split over
min(T, parallel parts), the bandwidth is the whole board's, and every op pays a thread barrier.
An activation outside the ReLU class adds, per output vector, its epilogue loop's cycles over
ReLU's; adds, muls (squeeze-excitation), concats, standalone activations and windowed average
pools take max(their loop's cycles, their bytes over the bandwidth); max pools, global average
pools and the input copy are memory-bound.  The loops are benchmarks/arm_mca_ops.cpp's: the
engine's activations (simd::activate) and elementwise loops; 5x5 (and any non-3x3-pad-1)
depthwise convs run the engine's depthwise_range on padded planes.  No constant
is fitted to anything:
ncnn's published dense figures are printed beside ours (``python -m latency.devicemodel --compare``)
as a fact about our engine, not as a target.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jcw.core.util import atomic_write
from latency.lut import RELU_CLASS, Entry, LatencyTable, layer_axes, layer_key, op_axes, op_key, table_ops
from jcw.core.netspec import load_shipped

PACKAGE_DIR = Path(__file__).resolve().parent
TABLE_DIR = PACKAGE_DIR / "tables"
KERNEL_CYCLES = PACKAGE_DIR / "kernel_cycles.json"
TABLE_MODELS = ("resnet18", "mobilenet_v1", "mobilenet_v2", "resnet20", "resnet56", "vgg16",
                "resnet50", "mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0")
THREADS = (1, 4)   # shipped tables; tables for 1-4 threads are built on demand
CORES = 4          # both boards have four cores
METHOD = "llvm-mca {core} + roofline"
LANES = 4          # NEON: 4 floats per vector
TILE_PIXELS = 16   # tile_rows<4,4>: 4 vectors of 4 pixels (NEON runs every non-depthwise conv on it)
NCNN_SOURCE = ("ncnn benchmark/README.md (Tencent/ncnn), fp32, 224x224: Raspberry Pi 3 Model B+ (Cortex-A53 "
               "@ 1.4 GHz) and Raspberry Pi 4 Model B (Cortex-A72 @ 1.5 GHz), 1 and 4 threads")


@dataclass(frozen=True)
class Board:
    """A modelled board: its core (llvm-mca model name), clock, memory and the assumed fixed costs."""

    name: str
    core: str                   # llvm-mca -mcpu
    description: str
    clock_ghz: float
    bandwidth_gbs: float        # sustained memory bandwidth of the board (GB/s), one core or all
    bandwidth_source: str
    op_overhead_us: float       # per op: plan lookup, call, argument set-up (assumed)
    barrier_us: float           # per op with more than one thread: wake the pool and join (assumed)
    ncnn_ms: dict               # (model, threads) -> ncnn's published dense ms (comparison only)


BOARDS = {
    "a53": Board(
        name="a53", core="cortex-a53", description="Cortex-A53 @ 1.4 GHz (Raspberry Pi 3 Model B+)", clock_ghz=1.4,
        bandwidth_gbs=1.55,
        bandwidth_source=("LPDDR2-900 on a 32-bit bus (BCM2837B0): 3.6 GB/s peak, at the 43 % STREAM efficiency "
                          "the Raspberry Pi 4 reaches (below) = 1.55 GB/s, for one core and four alike"),
        op_overhead_us=2.0, barrier_us=10.0,
        ncnn_ms={("mobilenet_v1", 1): 206.0, ("resnet18", 1): 380.0, ("mobilenet_v2", 1): 159.0,
                 ("mobilenet_v1", 4): 109.0, ("resnet18", 4): 272.0, ("mobilenet_v2", 4): 111.7},
    ),
    "a72": Board(
        name="a72", core="cortex-a72", description="Cortex-A72 @ 1.5 GHz (Raspberry Pi 4 Model B)", clock_ghz=1.5,
        bandwidth_gbs=5.5,
        bandwidth_source=("STREAM copy 5.5 GB/s measured on a Raspberry Pi 4 (sci-pi.org.uk/bench/stream.html) "
                          "of LPDDR4-3200 x32 = 12.8 GB/s peak (43 %)"),
        op_overhead_us=1.5, barrier_us=6.0,
        ncnn_ms={("mobilenet_v1", 1): 124.0, ("resnet18", 1): 191.0, ("mobilenet_v2", 1): 93.0,
                 ("mobilenet_v1", 4): 61.0, ("resnet18", 4): 123.0, ("mobilenet_v2", 4): 62.0},
    ),
}


@dataclass(frozen=True)
class Kernel:
    """One microkernel on one core: llvm-mca cycles per inner iteration and per outer unit."""

    name: str
    cycles_per_iter: float
    overhead_cycles: float
    peak_fraction: float
    variant: str


def load_kernel_cycles(path: Path = KERNEL_CYCLES) -> list[dict]:
    """The entries of ``benchmarks/arm_mca.py --json`` this model rests on."""
    return json.loads(Path(path).read_text())


def kernel_sources_sha256(entries: list[dict], root: Path) -> str:
    """sha256 of the kernel sources the entries were analysed from, as they are under ``root`` now
    (same recipe as arm_mca.py: the files concatenated in sorted path order)."""
    h = hashlib.sha256()
    for rel in sorted(entries[0]["sources"]):
        h.update((Path(root) / rel).read_bytes())
    return h.hexdigest()


# Which entry of kernel_cycles.json runs a role, by kernel-name prefix (the first non-prefetch match).
ROLES = {
    "tile": "tile_rows<",                     # block-sparse (and dense-packed) 1x1 / 3x3 / strided convs
    "depthwise_s1": "depthwise3x3_direct<",   # iteration: one vector column of an output row pair
    "depthwise_s1_cpp": "depthwise3x3_direct_cpp<",  # the same, compiled loop (neon_a53: what the assembly leaves)
    "depthwise_s2": "depthwise3x3s2_direct<",  # iteration: one output vector
    "depthwise_s2_cpp": "depthwise3x3s2_direct_cpp<",  # the same, compiled loop (neon_a53: what the assembly leaves)
    "depthwise_flat": "depthwise_flat<4,3>",  # 3x3 stride 1 on images narrower than a vector
    "depthwise_flat5": "depthwise_flat<4,5>",  # 5x5 stride 1 pad 2, any image
    "depthwise_planes": "depthwise_range<",   # any other depthwise (5x5 s2): iteration one tap of one output vector
}
OPTIONAL_ROLES = ("depthwise_s1_cpp", "depthwise_s2_cpp")  # absent from files older than the A53 assembly
# The elementwise loops of benchmarks/arm_mca_ops.cpp, by kind: cycles per vector of 4 floats.
#   act_<a>: a standalone activation; epilogue_<a>: the activation inside a kernel's epilogue (4
#   independent vectors; the ReLU class is part of every conv's measured overhead, the extra of <a> is
#   epilogue_<a> - epilogue_relu); add: residual add + ReLU; mul: elementwise; scale: squeeze-excitation;
#   copy: a concatenation's copy; sum: an average pool's sums (the driver's header says where each
#   loop comes from).
LOOP_KINDS = ("add", "mul", "scale", "copy", "sum")


def core_loops(entries: list[dict], core: str) -> dict[str, float]:
    """kind -> cycles per vector (4 floats) of ``core``'s elementwise loops (act_<a>, epilogue_<a>, add, ...);
    empty for a kernel_cycles.json made before they were analysed."""
    return {e["kind"]: float(e["cycles_per_iter"]) / (float(e["outputs_per_iter"]) / LANES)
            for e in entries if e["core"] == core and e["macs_per_iter"] == 0 and e["outputs_per_iter"]}


def core_kernels(entries: list[dict], core: str) -> dict[str, Kernel]:
    """role -> Kernel of ``core`` (the variant the engine dispatches on that core)."""
    found = {}
    for role, prefix in ROLES.items():
        match = [e for e in entries if e["core"] == core and e["kernel"].startswith(prefix)
                 and "prefetch" not in e["kernel"]]
        if not match and role in OPTIONAL_ROLES:
            continue
        if not match:
            raise ValueError(f"{KERNEL_CYCLES.name} has no {prefix}...> entry for {core}; re-run benchmarks/arm_mca.py")
        e = match[0]
        found[role] = Kernel(e["kernel"], float(e["cycles_per_iter"]), float(e["overhead_cycles"]),
                             float(e["peak_fraction"]), e.get("variant", "neon"))
    return found


@dataclass(frozen=True)
class CostModel:
    """The cost of our engine's layers on one board at one thread count."""

    board: Board
    threads: int
    kernels: dict
    loops: dict = None   # kind -> cycles per vector (core_loops)

    @classmethod
    def for_board(cls, board: str, threads: int, entries: list[dict] | None = None) -> "CostModel":
        b = BOARDS[board]
        entries = entries if entries is not None else load_kernel_cycles()
        return cls(b, threads, core_kernels(entries, b.core), core_loops(entries, b.core))

    def _loop(self, kind: str) -> float:
        if not self.loops or kind not in self.loops:
            raise ValueError(f"{KERNEL_CYCLES.name} has no {kind} loop for {self.board.core}; re-run "
                             "python benchmarks/arm_mca.py --json latency/kernel_cycles.json")
        return self.loops[kind]

    def epilogue_cycles(self, act: str) -> float:
        """Extra cycles per output vector of an epilogue with ``act`` over the ReLU the kernels' measured
        overheads hold (0 for the ReLU class: none, relu, relu6)."""
        if act in RELU_CLASS:
            return 0.0
        return max(0.0, self._loop(f"epilogue_{act}") - self._loop("epilogue_relu"))

    def act_cycles(self, act: str) -> float:
        """Cycles per vector of a standalone activation pass (0 for "none")."""
        return 0.0 if act == "none" else self._loop(f"act_{act}")

    @property
    def ms_per_cycle(self) -> float:
        return 1e-6 / self.board.clock_ghz

    @property
    def ms_per_byte(self) -> float:
        return 1e-6 / self.board.bandwidth_gbs

    @property
    def fixed_ms(self) -> float:
        """Per-op cost: dispatch, plus a thread barrier with more than one thread."""
        return 1e-3 * (self.board.op_overhead_us + (self.board.barrier_us if self.threads > 1 else 0.0))

    def _finish(self, cycles, parts, moved) -> np.ndarray:
        """max(compute over min(threads, parts) cores, memory) + the per-op cost, in ms."""
        cores = np.minimum(self.threads, np.maximum(parts, 1))
        compute = cycles / cores * self.ms_per_cycle
        return np.maximum(compute, moved * self.ms_per_byte) + self.fixed_ms

    def _a53_dw3_unit(self, stride: int, w: int) -> float:
        """Cycles of one outer unit of a depthwise 3x3 layer on neon_a53 with input rows w wide: stride 1,
        an output row pair (the assembly's T = w / 8 trips of two column vectors; the compiled loop
        for the others, the first and the last); stride 2, an output row (T = w / 16 trips of two output
        vectors; the compiled loop for the rest).  The assembly's first two and odd last trips are
        outside its loop and costed at the loop's rate."""
        role = f"depthwise_s{stride}"
        asm, cpp = self.kernels[role], self.kernels[role + "_cpp"]
        vectors = math.ceil(math.ceil(w / stride) / LANES)
        trips = w // (8 * stride)  # of 8 (stride 1) or 16 (stride 2) input columns; it runs from 2 on
        if trips < 2:
            return vectors * cpp.cycles_per_iter + cpp.overhead_cycles
        in_compiled = vectors - (2 * trips - 2 if stride == 1 else 2 * trips)
        return 2 * trips * asm.cycles_per_iter + in_compiled * cpp.cycles_per_iter + cpp.overhead_cycles

    def kernel_for(self, layer) -> str:
        """The role name of the microkernel the engine runs for a LayerSpec (NEON runs every
        non-depthwise conv, dense or sparse, on the 4x1-block tile)."""
        if layer.kind == "depthwise":
            if (layer.kernel == 5 and layer.stride == 1 and layer.padding == 2
                    and layer.in_res ** 2 >= LANES):  # Conv2d::depthwise_flat
                return "depthwise_flat5"
            if layer.kernel != 3 or layer.padding != 1 or layer.stride not in (1, 2):  # Conv2d::depthwise_direct
                return "depthwise_planes"
            if layer.stride == 2:
                return "depthwise_s2"
            return "depthwise_flat" if layer.in_res < LANES else "depthwise_s1"
        return "tile"

    def layer_ms(self, layer, out_ch, in_ch, density) -> np.ndarray:
        """Modelled ms of a conv/fc LayerSpec at (broadcastable) out_ch, in_ch, density arrays."""
        out_ch = np.asarray(out_ch, dtype=float)
        in_ch = np.asarray(in_ch, dtype=float)
        density = np.asarray(density, dtype=float)
        out_ch, in_ch, density = np.broadcast_arrays(out_ch, in_ch, density)
        k = self.kernels
        ho = layer.out_res
        pixels = float(ho * ho)
        k2 = float(layer.kernel ** 2)
        in_bytes = 4.0 * in_ch * (1.0 if layer.kind == "fc" else layer.in_res ** 2)
        out_bytes = 4.0 * out_ch * pixels
        extra = self.epilogue_cycles(layer.act)  # per output vector, beyond the ReLU class
        if layer.kind == "depthwise":
            role = self.kernel_for(layer)
            kern = k[role]
            if role == "depthwise_planes":
                # depthwise_range: per output row, vectors of 4 pixels (1 on rows narrower than a vector),
                # each k*k taps plus its own code; the padded planes are written and read once.
                vectors = out_ch * ho * (math.ceil(ho / LANES) if ho >= LANES else ho)
                cycles = vectors * (k2 * kern.cycles_per_iter + kern.overhead_cycles + extra)
                planes = 4.0 * in_ch * (layer.in_res + 2 * layer.padding) ** 2
                moved = in_bytes + out_bytes + 4.0 * out_ch * (k2 + 1) + 2.0 * planes
                return self._finish(cycles, out_ch, moved)
            flat = role.startswith("depthwise_flat")
            vectors = math.ceil(pixels / LANES) if flat else math.ceil(ho / LANES)
            if role == "depthwise_s1":
                iters, units = out_ch * math.ceil(ho / 2) * vectors, out_ch * math.ceil(ho / 2)
                outputs = 2 * iters  # an iteration stores a vector of each of the pair's rows
            elif role == "depthwise_s2":
                iters, units = out_ch * ho * vectors, out_ch * ho
                outputs = iters
            else:
                iters, units = out_ch * vectors, out_ch
                outputs = iters
            compiled = k.get(role + "_cpp", kern)  # neon_a53's 3x3: the compiled loop's own entry
            if compiled is not kern and kern.variant == "neon_a53" and layer.act in RELU_CLASS:
                cycles = units * self._a53_dw3_unit(layer.stride, layer.in_res)  # the assembly's activations
            else:
                cycles = iters * compiled.cycles_per_iter + units * compiled.overhead_cycles
            if extra:
                cycles = cycles + outputs * extra
            moved = in_bytes + out_bytes + 4.0 * out_ch * (k2 + 1)
            if flat:  # each channel is copied once between zero rows first
                moved = moved + 2.0 * in_bytes
            return self._finish(cycles, out_ch, moved)
        rows = np.ceil(out_ch / 4)
        blocks = rows * in_ch * k2                         # 4x1 blocks of the layer
        kept = np.round(density * blocks)
        # tile_rows: tiles over the virtual output row (padded planes are wider by the kernel's reach)
        reach = (layer.kernel - 1) // layer.stride if layer.padding > 0 else 0
        # The engine's GEMV: fc layers, and 1x1 convs on a single pixel (squeeze-excitation gates; NEON
        # runs them all there, Conv2d's Gemv path).
        gemv = layer.kind == "fc" or (layer.kernel == 1 and layer.stride == 1 and layer.padding == 0
                                      and layer.in_res == 1)
        qend = 1.0 if gemv else (ho - 1) * (ho + reach) + ho
        tiles = math.ceil(qend / TILE_PIXELS)
        tile = k["tile"]
        tile_cycles = kept * tiles * tile.cycles_per_iter + rows * tiles * tile.overhead_cycles
        if extra:  # the epilogue activates 4 rows x 4 vectors per block row and tile
            tile_cycles = tile_cycles + rows * tiles * 4 * (TILE_PIXELS // LANES) * extra
        if gemv:  # the engine's GEMV is not in the analysis: its MACs at the tile kernel's MAC rate
            tile_cycles = kept * 4 * tile.cycles_per_iter / TILE_PIXELS + rows * tile.overhead_cycles / TILE_PIXELS
            if extra:  # one vector of 4 outputs per block row
                tile_cycles = tile_cycles + rows * extra
        planes = 0.0 if reach == 0 and layer.stride == 1 else 4.0 * in_ch * (layer.in_res + 2 * layer.padding) ** 2
        tile_moved = in_bytes + out_bytes + 20.0 * kept + 2.0 * planes  # 4 weights + a 4-byte code per block
        cycles, moved = tile_cycles, tile_moved
        parts = np.maximum(rows, tiles)
        return self._finish(cycles, parts, moved)

    def op_ms(self, op, channels) -> np.ndarray:
        """Modelled ms of a non-conv op at an array of channel counts: max(compute, bytes moved over
        the bandwidth) plus the per-op cost (see the table in docs/latency.md).

        Max pools, global average pools and the input copy are memory only, as before the loops were
        analysed (both boards: a pass over the data is far below the roofline).  add: two reads and a
        write, compute the add<relu> loop plus the epilogue extra of a non-ReLU activation (the engine
        runs the add and its activation in a conv's epilogue).  mul: the squeeze-excitation scale
        (read the tensor and the gate, write), the scale loop, plus a standalone pass of a non-ReLU
        activation applied to its result.  act: a standalone pass (read, write) of the act loop.
        concat: a copy of every input into its slice (read, write), the copy loop.  Windowed average
        pool: read the input, write the output; compute k*k vector sums per output vector at the sum
        loop's cycles.
        """
        c = np.asarray(channels, dtype=float)
        area_in, area_out = float(op.in_res ** 2), float(op.out_res ** 2)
        vectors = c * area_in / LANES
        act = getattr(op, "act", "none")
        cycles = np.zeros_like(c)
        if op.kind == "add":
            moved = 4.0 * c * 3.0 * area_in
            if self.loops:
                cycles = vectors * (self._loop("add") + self.epilogue_cycles(act))
        elif op.kind == "mul":
            moved = 4.0 * c * (2.0 * area_in + 1.0)
            cycles = vectors * self._loop("scale")
            if act not in RELU_CLASS:  # a second step over the result
                cycles = cycles + vectors * self.act_cycles(act)
                moved = moved + 4.0 * c * 2.0 * area_in
        elif op.kind == "act":
            moved = 4.0 * c * 2.0 * area_in if act != "none" else np.zeros_like(c)
            cycles = vectors * self.act_cycles(act)
        elif op.kind == "concat":
            moved = 4.0 * c * 2.0 * area_in
            cycles = vectors * self._loop("copy")
        elif op.kind == "avgpool" and op.kernel > 0:
            moved = 4.0 * c * (area_in + area_out)
            out_vectors = c * op.out_res * math.ceil(op.out_res / LANES)
            cycles = out_vectors * op.kernel ** 2 * self._loop("sum")
        else:  # maxpool, global avgpool, input
            reads = area_in
            moved = 4.0 * c * (reads + (area_in if op.kind == "input" else area_out))
        return self._finish(cycles, c, moved)

    def network_ms(self, spec) -> float:
        """Modelled ms of the unpruned network of a NetSpec."""
        layers = sum(float(self.layer_ms(x, x.out_ch, x.in_ch, 1.0)) for x in spec.layers)
        return layers + sum(float(self.op_ms(op, op.channels)) for op in table_ops(spec))


def _r(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def provenance(model: CostModel, entries: list[dict]) -> dict:
    """The provenance block of a modelled table: method, kernels, board constants and their sources."""
    b = model.board
    return {
        "kind": "modelled",
        "device": b.description,
        "threads": model.threads,
        "method": METHOD.format(core=b.core),
        "engine": (f"NEON kernels, variant {model.kernels['tile'].variant}, sources sha256 "
                   f"{entries[0]['sources_sha256'][:12]}"),
        "kernels": {role: {"kernel": k.name, "cycles_per_iter": k.cycles_per_iter,
                           "overhead_cycles": k.overhead_cycles, "peak_fraction": k.peak_fraction}
                    for role, k in model.kernels.items()},
        "loops": {"sources_sha256": next((e["sources_sha256"][:12] for e in entries if e["kind"] in model.loops), None),
                  "cycles_per_vector": {kind: round(c, 4) for kind, c in sorted(model.loops.items())}},
        "model": ("per conv: max(llvm-mca cycles (iterations x cycles/iter + outer units x overhead) / clock / "
                  "min(threads, parallel parts), bytes moved / bandwidth) + per-op dispatch (+ a barrier with "
                  "> 1 thread); an activation outside the ReLU class adds its epilogue loop's cycles over ReLU's "
                  "per output vector; non-conv ops: max(their loop's cycles, bytes moved / bandwidth) (max pool, "
                  "global average pool and the input copy memory only); memory behaviour (caches) beyond the "
                  "roofline is not modelled"),
        "command": "python -m latency.devicemodel",
        "assumed": {"clock_ghz": b.clock_ghz, "bandwidth_gbs": b.bandwidth_gbs,
                    "op_overhead_us": b.op_overhead_us, "barrier_us": b.barrier_us if model.threads > 1 else 0.0},
        "sources": [b.bandwidth_source, "cycles: benchmarks/arm_mca.py --json (latency/kernel_cycles.json)"],
    }


def build_table(device: str, threads: int, models=TABLE_MODELS, specs=(), entries: list[dict] | None = None) -> LatencyTable:
    """The modelled table of ``device`` at ``threads`` over the default grids of the shipped ``models``
    and any further NetSpecs ``specs``."""
    entries = entries if entries is not None else load_kernel_cycles()
    model = CostModel.for_board(device, threads, entries)
    layers, ops, covered = {}, {}, []
    for spec in [load_shipped(name) for name in models] + list(specs):
        covered.append(f"{spec.model}@{spec.resolution}")
        for layer in spec.layers:
            key = layer_key(layer)
            if key in layers:
                continue
            axes = layer_axes(layer)
            o = np.asarray(axes["out_ch"], dtype=float)[:, None, None]
            i = o if axes["in_ch"] is None else np.asarray(axes["in_ch"], dtype=float)[None, :, None]
            d = np.ones(1) if axes["density"] is None else np.asarray(axes["density"])[None, None, :]
            mean = np.broadcast_to(model.layer_ms(layer, o, i, d), _shape(axes))
            layers[key] = Entry.build(key, axes, mean)
        for op in table_ops(spec):
            key = op_key(op)
            if key not in ops:
                axes = op_axes(op)
                ops[key] = Entry.build(key, axes, model.op_ms(op, np.asarray(axes["out_ch"], dtype=float)))
    return LatencyTable(device=device, threads=threads, provenance=provenance(model, entries), layers=layers,
                        ops=ops, models=covered)


def _shape(axes: dict) -> tuple:
    return tuple(1 if axes[a] is None else len(axes[a]) for a in ("out_ch", "in_ch", "density"))


def table_path(device: str, threads: int, directory: Path = TABLE_DIR) -> Path:
    """Where the shipped table of ``device`` at ``threads`` lives."""
    return Path(directory) / f"{device}-{threads}t.json"


def comparison() -> str:
    """Our modelled dense whole-network ms beside ncnn's published figures (a fact, not a target)."""
    lines = [f"modelled dense latency of our engine vs ncnn's published figures ({NCNN_SOURCE})",
             f"{'board':6}{'threads':>8}  {'model':14}{'ours ms':>9}{'ncnn ms':>9}{'ours/ncnn':>10}"]
    for name, board in BOARDS.items():
        for threads in THREADS:
            model = CostModel.for_board(name, threads)
            for (net, t), ncnn in board.ncnn_ms.items():
                if t == threads:
                    ours = model.network_ms(load_shipped(net))
                    lines.append(f"{name:6}{threads:>8}  {net:14}{ours:>9.1f}{ncnn:>9.1f}{ours / ncnn:>10.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """python -m latency.devicemodel [--out-dir DIR] [--check] [--compare]: (re)write or verify the shipped tables."""
    p = argparse.ArgumentParser(prog="python -m latency.devicemodel", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", type=Path, default=TABLE_DIR, help="where to write the tables (default: the package's)")
    p.add_argument("--check", action="store_true", help="only verify the files there are byte-identical to a regeneration")
    p.add_argument("--compare", action="store_true", help="print our modelled dense ms beside ncnn's published figures")
    args = p.parse_args(argv)
    if args.compare:
        print(comparison())
        return 0
    stale = []
    for device in BOARDS:
        for threads in THREADS:
            path = table_path(device, threads, args.out_dir)
            text = build_table(device, threads).to_json()
            if args.check:
                if not path.is_file() or path.read_text() != text:
                    stale.append(str(path))
                continue
            atomic_write(path, text)
            print(f"{path}: {len(text) // 1024} KiB")
    if stale:
        print("stale or missing: " + ", ".join(stale) + "; run python -m latency.devicemodel", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
