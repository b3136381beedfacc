"""profile-latency: measure per-layer latency grids of our engine on this machine into a LatencyTable."""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import socket
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latency.context import Run, activation_nodes, build, design
from latency.lut import (DENSITIES, QUICK_DENSITIES, QUICK_RATIOS, RATIOS, Entry, LatencyTable, cost_act, describe_key,
                         layer_axes, layer_key, op_axes, op_key, table_ops)
from jcw.core.errors import UsageError
from jcw.core.netspec import OP_KINDS, NetSpec, load_shipped
from jcw.core.util import atomic_write

IMAGENET_ZOO = ("resnet18", "mobilenet_v1", "mobilenet_v2")
# How grid points are timed; a table measured another way is not continued (see latency.context).
METHOD = "context-v2"  # v2: one density per context run (v1 cycled densities across its layers)
# A median reference-network time (taken between the context runs) above this factor times the
# fastest means the machine ran slow for most of the profiling (a co-tenant, a governor): the
# table warns. Short spikes are normal on a shared machine and are left to normalise().
DRIFT = 1.10
# The reference network is timed again after every this many context runs; runs between two slow
# timings are scaled back to the median reference time, so a slow spell of the machine during
# profiling does not end up in the table (see normalise()).
REFERENCE_EVERY = 12


@dataclass
class ProfileConfig:
    """What to measure and where to write it."""

    models: tuple = IMAGENET_ZOO
    resolution: int | None = None     # None: each model's default resolution
    device: str = "host"
    threads: int = 1
    out: Path = Path("host-1t.json")
    repeats: int = 15
    warmup: int = 3
    rounds: int = 2                   # passes over the whole grid; their samples are pooled (median)
    quick: bool = False
    fresh: bool = False
    seed: int = 0
    command: str = ""


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip().strip("\x00")
    except OSError:
        return None


def machine_info(threads: int) -> tuple[dict, list[str]]:
    """Provenance of a measurement on this machine, and warnings about unstable clocks."""
    cpu = None
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.lower().startswith(("model name", "hardware", "processor\t: arm", "cpu model")):
            cpu = line.split(":", 1)[1].strip()
            break
    board = _read("/proc/device-tree/model")
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    max_khz = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    warnings = []
    if governor is not None and governor != "performance":
        warnings.append(f"CPU frequency governor is '{governor}', not 'performance': timings may drift "
                        f"(sudo cpupower frequency-set -g performance)")
    throttled = None
    if shutil.which("vcgencmd"):
        try:
            throttled = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True,
                                       timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            throttled = None
        if throttled and throttled.split("=")[-1] not in ("0x0", "0"):
            warnings.append(f"the board reports throttling ({throttled}): check power supply and cooling")
    from jcw import autotune, kernels
    from jcw.engine import ENGINE_VERSION

    autotune.apply_cached(tune_missing=True)

    info = {
        "kind": "measured",
        "cpu": cpu or platform.processor() or platform.machine(),
        "board": board,
        "machine": platform.machine(),
        "cpu_max_mhz": int(max_khz) // 1000 if max_khz and max_khz.isdigit() else None,
        "governor": governor,
        "throttled": throttled,
        "threads": threads,
        "engine_version": ENGINE_VERSION,
        "isa": kernels.isa(),
        # The kernels the table timed (after the autotune, as Engine applies it): kernels_provenance.
        "kernels": kernels_provenance(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "numpy": np.__version__,
    }
    return info, warnings


def kernels_provenance() -> str:
    """The kernels a table times: the variant run, the set this build offers on this CPU, and the
    per-class variants an autotune applied (jcw/autotune.py), if any."""
    from jcw import kernels

    text = f"{kernels.kernel_variant()} (of {','.join(kernels.kernel_variants())})"
    per_class = kernels.class_variants()
    return text + ("; " + ", ".join(f"{c} {v}" for c, v in sorted(per_class.items())) if per_class else "")


def _onnx(nodes, inits, in_shape, out_shape, opset: int = 13):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes, "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *in_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, *out_shape])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=onnx.IR_VERSION)


def cache_bytes(level: int) -> int:
    """Size of cpu0's unified/data cache of ``level`` from sysfs (0 when absent or unknown)."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for index in sorted(base.glob("index*")) if base.is_dir() else []:
        if _read(str(index / "level")) == str(level) and _read(str(index / "type")) != "Instruction":
            size = _read(str(index / "size")) or ""
            digits = size.rstrip("KMG")
            if digits.isdigit():
                return int(digits) * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:], 1)
    return 0


def working_set_bytes(spec) -> int:
    """Bytes one inference of the unpruned ``spec`` touches: weights, layer outputs and the image."""
    total = 4 * spec.layers[0].in_ch * spec.resolution ** 2
    for x in spec.layers:
        total += 4 * (x.out_ch * x.in_ch // x.groups * x.kernel ** 2 + x.out_ch * x.out_res ** 2)
    return total


def flush_bytes(spec) -> int:
    """Data to stream between timed runs: what the rest of the network touches, at most 4x the L2.

    That empties the core's private caches as a network's other layers do; a shared last-level
    cache keeps part of what a (pruned) network touches, so it is not flushed.
    """
    return min(working_set_bytes(spec), 4 * (cache_bytes(2) or 1 << 20))


class Timer:
    """Times one layer or op as it runs inside a network: the engine's per-step time of a one-op model.

    Before every timed run ``flush`` bytes are rewritten (the cache pressure of the rest of the
    network: see flush_bytes) and the op's input is read once (the previous op just wrote it).
    """

    def __init__(self, threads: int, repeats: int, warmup: int, flush: int):
        self.threads, self.repeats, self.warmup = threads, repeats, warmup
        self.flush = np.zeros(max(flush // 4, 1), dtype=np.float32)

    def samples(self, model, in_shape, rng, whole: bool = False) -> np.ndarray:
        """ms of the last step of ``model`` per run (``whole``: of the whole run)."""
        from jcw.engine import Engine

        engine = Engine(model, threads=self.threads)
        x = rng.standard_normal((1, *in_shape), dtype=np.float32)
        for _ in range(self.warmup):
            engine.run(x)

        def one() -> float:
            self.flush += 1.0
            np.add.reduce(x, axis=None)
            if whole:
                return float(engine.benchmark(x, repeats=1, warmup=0)[0])
            return list(engine.profile(x, repeats=1, warmup=0).values())[-1]

        return np.array([one() for _ in range(self.repeats)])

    def conv(self, weight, bias, stride: int, padding: int, groups: int, in_res: int, residual=False,
             act: str = "relu") -> np.ndarray:
        """Samples of a conv + bias + ``act`` (+ a residual add of its input, fused by the engine)."""
        from onnx import helper

        out_ch, k = weight.shape[0], weight.shape[2]
        in_ch = weight.shape[1] * groups
        out_res = (in_res + 2 * padding - k) // stride + 1
        nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], strides=[stride] * 2, pads=[padding] * 4,
                                  group=groups)]
        if residual:
            nodes.append(helper.make_node("Add", ["c", "x"], ["s"]))
        inits, opset = {"w": weight, "b": bias}, 13
        if act == "relu":  # as every table before other activations were keyed timed it
            nodes.append(helper.make_node("Relu", [nodes[-1].output[0]], ["y"]))
        elif act == "none":
            nodes[-1].output[0] = "y"
        else:
            made, needs, opset = activation_nodes(nodes[-1].output[0], act, out="y")
            nodes += made
            inits.update(needs)
        model = _onnx(nodes, inits, (in_ch, in_res, in_res), (out_ch, out_res, out_res), opset)
        return self.samples(model, (in_ch, in_res, in_res), np.random.default_rng(0))

    def op(self, op, channels: int, rng) -> np.ndarray:
        """Samples (ms) of a non-conv op at ``channels`` (an add: the cost of fusing it into a conv)."""
        from onnx import helper

        r = op.in_res
        if op.kind == "add":
            zero = np.zeros((channels, channels, 1, 1), dtype=np.float32)
            bias = rng.standard_normal(channels, dtype=np.float32)
            if cost_act(op.act) == "":  # ReLU class: the add's ReLU is the conv's anyway
                fused = self.conv(zero, bias, 1, 0, 1, r, residual=True)
                return _difference(fused, self.conv(zero, bias, 1, 0, 1, r))
            # Another activation after the add runs in the conv's fused epilogue but is the add's:
            # its entry holds it, and the conv keyed by its own activation is charged without it.
            fused = self.conv(zero, bias, 1, 0, 1, r, residual=True, act=op.act)
            return _difference(fused, self.conv(zero, bias, 1, 0, 1, r, act="none"))
        if op.kind == "maxpool":
            out = op.out_res
            node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[op.kernel] * 2,
                                    strides=[op.stride] * 2, pads=[op.padding] * 4)
            return self.samples(_onnx([node], {}, (channels, r, r), (channels, out, out)), (channels, r, r), rng)
        node = helper.make_node("GlobalAveragePool", ["x"], ["y"])
        model = _onnx([node], {}, (channels, r, r), (channels, 1, 1))
        if op.kind == "avgpool":
            return self.samples(model, (channels, r, r), rng)
        whole = self.samples(model, (channels, r, r), rng, whole=True)
        return _difference(whole, self.samples(model, (channels, r, r), rng))


def _difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-quantile differences a - b (>= 0) of two sample sets: the cost of what a adds to b."""
    n = min(len(a), len(b))
    return np.maximum(np.sort(a)[:n] - np.sort(b)[:n], 0.0)


def _stats(samples: np.ndarray) -> tuple[float, float, int]:
    return float(np.median(samples)), float(np.std(samples)), int(len(samples))


def _measure(item, key: tuple, axes: dict, timer: Timer, rng, tick) -> Entry:
    """The grid of one op timed alone, point by point (used for the fused residual adds)."""
    shape = tuple(1 if axes[a] is None else len(axes[a]) for a in ("out_ch", "in_ch", "density"))
    mean, std, count = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for idx in np.ndindex(*shape):
        mean[idx], std[idx], count[idx] = _stats(timer.op(item, axes["out_ch"][idx[0]], rng))
        tick()
    return Entry.build(key, axes, mean, std, count)


def _linear_in_channels(e: Entry) -> Entry:
    """``e`` with its means replaced by the line ``a + b * channels`` (a, b >= 0) through them.

    A fused add's cost is its epilogue's memory traffic, linear in the channels, and at small sizes
    a fraction of a microsecond: each grid point's difference of two timings is mostly noise, and
    a noisy point subtracted from its producer conv (ContextRunner.measure) could take that conv's
    entry to zero. The line pools every point of the entry; it is the Theil-Sen line (median of the
    pairwise slopes, then the median intercept), which one spiked point does not pull.
    """
    c, y = np.asarray(e.axes["out_ch"], dtype=float), e.mean.reshape(-1)
    if len(c) < 2:
        return e
    i, j = np.triu_indices(len(c), 1)
    b = max(float(np.median((y[j] - y[i]) / (c[j] - c[i]))), 0.0)
    a = float(np.median(y - b * c))
    if a < 0:
        a, b = 0.0, max(float(np.median(y / c)), 0.0)
    return Entry.build(e.key, e.axes, (a + b * c).reshape(e.mean.shape), e.std, e.count)


def _fastest(a: Entry, b: Entry) -> Entry:
    """Per grid point the pass with the lower median (load on a shared machine only slows)."""
    pick = b.mean < a.mean
    return Entry.build(a.key, a.axes, np.where(pick, b.mean, a.mean), np.where(pick, b.std, a.std), a.count + b.count)


def _index(axes: dict, out_ch: int, in_ch: int | None, density: float | None) -> tuple[int, int, int]:
    """Grid index of a point that lies on the axes (context runs only produce such points)."""
    def at(axis, v):
        if axes[axis] is None:
            return 0
        hit = np.flatnonzero(np.isclose(np.asarray(axes[axis], dtype=float), v))
        if not len(hit):
            raise UsageError(f"internal: {axis} {v} is not on the grid {list(axes[axis])}")
        return int(hit[0])
    return at("out_ch", out_ch), at("in_ch", in_ch), at("density", density)


def reference_timer(spec, threads: int, repeats: int, warmup: int, seed: int = 0):
    """A function returning the fastest ms of ``spec``'s full-width context network over ``repeats``
    runs: the same work every time, so its time tracks the machine's speed (normalise, DRIFT); the
    minimum ignores one-off spikes, a slower machine raises it. The network is built once."""
    from jcw.engine import Engine

    model, _ = build(spec, Run.full_width(spec), np.random.default_rng(seed))
    engine = Engine(model, threads=threads)
    x = np.random.default_rng(seed).standard_normal((1, *engine.input_shape), dtype=np.float32)
    return lambda: float(np.min(engine.benchmark(x, repeats=repeats, warmup=warmup)))


class ContextRunner:
    """Times one model's context networks (latency.context) and turns step times into grid samples.

    Every layer's step time goes to its grid point; a conv into which the engine fused a residual
    add is charged its time minus the add's table cost (the add keeps its own entry); max/average
    pools go to their op; the rest of the whole-run time (input copy, flatten, dispatch) is the
    ``input`` cost.
    """

    def __init__(self, spec, config: ProfileConfig, adds: dict):
        self.spec, self.config, self.adds = spec, config, adds
        ratios = QUICK_RATIOS if config.quick else RATIOS
        self.runs = design(spec, ratios, QUICK_DENSITIES if config.quick else DENSITIES)
        self.layer_axes = [layer_axes(x, config.quick) for x in spec.layers]
        self.ops = table_ops(spec)
        self.op_axes = [op_axes(x, config.quick) for x in self.ops]
        self._reference = None

    def reference(self) -> float:
        """Fastest ms of the full-width network over --repeats runs (see reference_timer), timed
        every REFERENCE_EVERY context runs so the machine's speed at that moment is known."""
        if self._reference is None:
            self._reference = reference_timer(self.spec, self.config.threads, self.config.repeats,
                                              self.config.warmup, self.config.seed)
        return self._reference()

    def measure(self, index: int) -> list:
        """Records ``[item, idx, samples]`` of run ``index`` (item: "L<layer>" or "O<op>")."""
        from jcw.engine import Engine

        rng = np.random.default_rng([self.config.seed, zlib.crc32(self.spec.model.encode()), index])
        model, place = build(self.spec, self.runs[index], rng)
        engine = Engine(model, threads=self.config.threads)
        x = rng.standard_normal((1, *engine.input_shape), dtype=np.float32)
        for _ in range(self.config.warmup):
            engine.run(x)
        passes = [engine.profile(x, repeats=1, warmup=0) for _ in range(self.config.repeats)]
        total = engine.benchmark(x, repeats=self.config.repeats, warmup=0)
        steps = {name: np.array([p[name] for p in passes]) for name in passes[0]}
        plan = {p.name: p for p in engine.plan}
        fused = {name for name, p in plan.items() if p.residual}
        records, charged = [], 0.0
        for li, (name, out_ch, in_ch, density) in place.layers.items():
            t = steps[name].copy()
            for i, (channels, producers) in place.adds.items():
                if name in producers and name in fused:
                    e = self.adds[op_key(self.ops[i])]
                    t = t - float(e.mean[_index(e.axes, channels, None, None)])
                    fused.discard(name)
            in_ch = None if self.layer_axes[li]["in_ch"] is None else in_ch
            records.append([f"L{li}", _index(self.layer_axes[li], out_ch, in_ch, density), np.maximum(t, 0.0).tolist()])
            charged += float(np.median(steps[name]))
        for i, names in place.pools.items():
            # The op's own steps; one the engine fused into its producer (an act after a pool, say) is
            # not in the plan and costs nothing here (its producer's step carries it).
            t = sum((steps[name] for name in names if name in steps), np.zeros(len(passes)))
            records.append([f"O{i}", _index(self.op_axes[i], place.op_channels[i], None, None), t.tolist()])
            charged += float(np.median(t))
        records.append([f"O{len(self.ops) - 1}", (0, 0, 0), [max(float(np.median(total)) - charged, 0.0)]])
        return records

    def entries(self, records: list) -> dict:
        """Entries (by table key) of ``records``: per grid point the median of all its samples."""
        pooled: dict[tuple, list] = {}
        for item, idx, samples in records:
            pooled.setdefault((item, tuple(idx)), []).extend(samples)
        out = {}
        items = [(f"L{i}", layer_key(x), a) for i, (x, a) in enumerate(zip(self.spec.layers, self.layer_axes))]
        items += [(f"O{i}", op_key(x), a) for i, (x, a) in enumerate(zip(self.ops, self.op_axes)) if x.kind != "add"]
        by_key: dict[tuple, list] = {}
        for item, key, axes in items:
            by_key.setdefault(key, [axes, []])[1].append(item)
        for key, (axes, members) in by_key.items():
            shape = tuple(1 if axes[a] is None else len(axes[a]) for a in ("out_ch", "in_ch", "density"))
            mean, std, count = np.full(shape, np.nan), np.zeros(shape), np.zeros(shape)
            for idx in np.ndindex(*shape):
                samples = [s for m in members for s in pooled.get((m, idx), [])]
                if samples:
                    mean[idx], std[idx], count[idx] = _stats(np.array(samples))
            mean = fill_unreached(mean, axes)
            if np.isnan(mean).any():
                idx = tuple(int(i) for i in np.argwhere(np.isnan(mean))[0])
                raise UsageError(f"internal: the context design never reached {describe_key(key)} at {idx}")
            out[key] = Entry.build(key, axes, mean, std, count)
        return out


def fill_unreached(mean: np.ndarray, axes: dict) -> np.ndarray:
    """``mean`` (NaN where no context run reached the grid point) with those points interpolated
    linearly along the in_ch, then the out_ch channel axis from the reached points of the same line
    (constant beyond the last one); count stays 0 there.

    The design reaches every point of a layer of a free group reading free groups; what it cannot
    reach: channel counts of a frozen group (kept at full width, as in every arch), sums of a
    concatenation's parts that its colouring never combines, counts below the smallest such sum.
    Entries are shared by layers of equal keys, so the axes cover every count (``layer_axes``).
    """
    mean = mean.copy()
    for a, name in ((1, "in_ch"), (0, "out_ch")):
        if axes[name] is None:
            continue
        x = np.asarray(axes[name], dtype=float)
        lines = np.moveaxis(mean, a, -1)  # a view: filling it fills mean
        for idx in np.ndindex(*lines.shape[:-1]):
            line = lines[idx]
            known = ~np.isnan(line)
            if known.any() and not known.all():
                line[~known] = np.interp(x[~known], x[known], line[known])
    return mean


def normalise(runs: list, refs: list, every: int, typical: float) -> list:
    """The records of one round's runs, those measured during a slow spell scaled back to typical speed.

    ``runs[j]`` are the records of context run j, ``refs[b]`` the reference network's time before
    runs ``b * every ..`` (the last one after the round), ``typical`` the median of the model's
    reference times. Run j's samples are multiplied by ``min(1, typical / min(refs[b], refs[b + 1]))``
    for its block b: a slow spell that spans a whole block (both timings around it slow) is taken
    out, so the grid points it happened to measure are not raised; a spike caught by one timing is
    not (the block's runs were most likely at full speed: the per-point median over the pooled
    samples absorbs those), and nothing is scaled towards a lucky fastest timing.
    """
    out = []
    for j, records in enumerate(runs):
        b = j // every
        scale = min(1.0, typical / min(refs[b], refs[b + 1]))
        out.extend([item, idx, [v * scale for v in samples]] for item, idx, samples in records)
    return out


def _specs(config: ProfileConfig) -> list:
    """NetSpecs of ``config.models``: zoo names (their shipped specs), NetSpec JSON files (any network,
    e.g. written by ``python -m jcw.layers --model REF --out FILE``) or NetSpec objects."""
    specs = []
    for item in config.models:
        try:
            if isinstance(item, NetSpec):
                spec = item
            elif str(item).endswith(".json"):
                try:
                    spec = NetSpec.from_json(Path(item).read_text())
                except OSError as e:
                    raise UsageError(f"cannot read NetSpec file {item}: {e.strerror}") from None
            else:
                spec = load_shipped(item)
            if config.resolution is not None:
                spec = spec.at_resolution(config.resolution)
        except ValueError as e:
            raise UsageError(f"{item}: {e}") from None
        specs.append(spec)
    return specs


def _start(config: ProfileConfig, info: dict) -> LatencyTable:
    """The table to continue: the existing --out when it was measured the same way, else a new one."""
    empty = LatencyTable(device=config.device, threads=config.threads, provenance=info)
    if config.fresh or not Path(config.out).exists():
        return empty
    try:
        old = LatencyTable.load(config.out)
    except UsageError as e:
        raise UsageError(f"{e}; pass --fresh to overwrite it") from None
    p = old.provenance
    want = {"kind": "measured", "method": METHOD, "engine_version": info["engine_version"], "threads": config.threads,
            "grid": info["grid"], "repeats": info["repeats"], "rounds": info["rounds"], "cpu": info["cpu"]}
    if "kernels" in p:  # tables written before the kernel variants existed lack it
        want["kernels"] = info["kernels"]
    diff = [f"{k} {p.get(k)!r} (now {v!r})" for k, v in want.items() if p.get(k) != v]
    if old.device != config.device:
        diff.append(f"device {old.device!r} (now {config.device!r})")
    if diff:
        raise UsageError(f"{config.out} was measured differently: {', '.join(diff)}; pass --fresh to "
                           f"overwrite it or choose another --out")
    return old


def _partial_path(out: Path) -> Path:
    return Path(str(out) + ".partial.json")


def _load_partial(path: Path, stamp: dict) -> dict:
    """Context-run records already measured by an interrupted run made the same way (else nothing)."""
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return d.get("runs", {}) if d.get("stamp") == stamp else {}


def profile(config: ProfileConfig, progress: bool = True, log=print) -> LatencyTable:
    """Measure every missing layer signature and op of ``config.models`` into ``config.out``.

    Residual adds are timed alone (their fused cost); everything else inside whole context
    networks (latency.context), ``config.rounds`` times over the design, runs in a slow spell scaled
    back to the machine's typical speed (normalise), the median of all rounds' samples per grid
    point. The table is saved after each model, and finished context runs in
    ``OUT.partial.json`` as they go, so a re-run continues where a stopped one ended.
    """
    if config.threads < 1 or config.repeats < 1 or config.warmup < 0 or config.rounds < 1:
        raise UsageError("need --threads >= 1, --repeats >= 1, --warmup >= 0 and --rounds >= 1")
    specs = _specs(config)
    info, warnings = machine_info(config.threads)
    info.update(device=config.device, grid="quick" if config.quick else "full", method=METHOD,
                repeats=config.repeats, warmup=config.warmup, rounds=config.rounds, warnings=warnings,
                complete=False, command=config.command)
    for w in warnings:
        log(f"warning: {w}")
    table = _start(config, info)
    table.provenance = {**info, "date": table.provenance.get("date", info["date"])}
    partial = _partial_path(config.out)
    stamp = {k: info[k] for k in ("engine_version", "cpu", "threads", "grid", "repeats", "warmup", "rounds",
                                  "method")} | {"seed": config.seed}
    done = _load_partial(partial, stamp)
    saved = time.monotonic()
    work = []
    for spec in specs:
        tag = f"{spec.model}@{spec.resolution}"
        if tag not in table.models:
            table.models.append(tag)
        keys = [layer_key(x) for x in spec.layers] + [op_key(x) for x in table_ops(spec)]
        if any(k not in table.layers and k not in table.ops for k in keys):
            work.append((tag, spec))
    adds = {}
    for tag, spec in work:
        for op in table_ops(spec):
            if op.kind == "add" and op_key(op) not in table.ops:
                adds[op_key(op)] = (op, Timer(config.threads, config.repeats, config.warmup, flush_bytes(spec)))
    total = sum(len(op_axes(op, config.quick)["out_ch"]) for op, _ in adds.values()) * config.rounds
    from tqdm import tqdm

    with tqdm(total=total, disable=not progress, unit="run", desc=f"profile {config.device}") as bar:
        for key, (op, timer) in adds.items():
            bar.set_postfix_str(describe_key(key))
            for r in range(config.rounds):
                rng = np.random.default_rng([config.seed, zlib.crc32(describe_key(key).encode())])
                entry = _measure(op, key, op_axes(op, config.quick), timer, rng, lambda: bar.update(1))
                table.ops[key] = _fastest(table.ops[key], entry) if r else entry
            table.ops[key] = _linear_in_channels(table.ops[key])
            table.save(config.out)
        for tag, spec in work:
            runner = ContextRunner(spec, config, table.ops)
            bar.total += len(runner.runs) * config.rounds
            bar.refresh()
            rounds = []  # per round: the records of each context run, the reference timings around them
            for r in range(config.rounds):
                bar.set_postfix_str(f"{tag} round {r + 1}")
                runs, refs = [], []

                def ref(b: int) -> float:
                    rid = f"{tag}/{r}/ref{b}"
                    if rid not in done:
                        done[rid] = runner.reference()
                    return done[rid]

                for j in range(len(runner.runs)):
                    if j % REFERENCE_EVERY == 0:
                        refs.append(ref(j // REFERENCE_EVERY))
                    rid = f"{tag}/{r}/{j}"
                    if rid not in done:
                        done[rid] = runner.measure(j)
                        if time.monotonic() - saved > 10:
                            _save_partial(partial, stamp, done)
                            saved = time.monotonic()
                    runs.append(done[rid])
                    bar.update(1)
                refs.append(ref(len(refs)))  # after the round's last block
                rounds.append((runs, refs))
            reference = [v for _, refs in rounds for v in refs]
            typical = float(np.median(reference))
            # The rounds' samples are pooled (median per point), not the faster round per point:
            # slow spells are already scaled out, and a per-point minimum over rounds sums to less
            # than any whole run (each point keeps its own luckiest round).
            entries = runner.entries([rec for runs, refs in rounds
                                      for rec in normalise(runs, refs, REFERENCE_EVERY, typical)])
            table.provenance.setdefault("reference_ms", {})[tag] = [round(v, 4) for v in reference]
            if typical > DRIFT * min(reference):
                msg = (f"the machine's speed changed while profiling {tag}: its full-width network took "
                       f"{min(reference):.2f} to {max(reference):.2f} ms (median {typical:.2f}) over "
                       f"{len(reference)} timings between the context runs, so it ran slow for most of the "
                       f"profiling (slow spells are scaled back to the median, not to the fastest): "
                       f"re-run with --fresh on a quiet machine")
                table.provenance.setdefault("warnings", []).append(msg)
                log(f"warning: {msg}")
            for key, entry in entries.items():
                store = table.ops if key[0] in OP_KINDS or key[0] == "input" else table.layers
                store.setdefault(key, entry)
            table.save(config.out)
            done = {k: v for k, v in done.items() if not k.startswith(f"{tag}/")}
            _save_partial(partial, stamp, done)
    table.provenance["complete"] = True
    table.save(config.out)
    partial.unlink(missing_ok=True)
    return table


def _save_partial(path: Path, stamp: dict, runs: dict) -> None:
    atomic_write(path, json.dumps({"stamp": stamp, "runs": runs}))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="profile-latency",
        description="Measure per-layer latency tables of the jcw engine on this machine (numpy + onnx only).",
    )
    p.add_argument("--model", default=",".join(IMAGENET_ZOO),
                   help="comma-separated zoo models or NetSpec .json files of your own networks (written by "
                        "python -m jcw.layers --model REF --out FILE.json) (default: the ImageNet zoo %(default)s)")
    p.add_argument("--resolution", type=int, default=None, help="input size (default: each model's own)")
    p.add_argument("--device", default="host", help="label naming the table: a53, a72, host or anything (default host)")
    p.add_argument("--threads", type=int, default=1, help="engine threads (default 1); a table is per thread count")
    p.add_argument("--out", type=Path, default=None, help="table file (default DEVICE-THREADSt.json); continued if present")
    p.add_argument("--repeats", type=int, default=15, help="timed runs per grid point, more for fast layers (default 15)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs before timing (default 3)")
    p.add_argument("--rounds", type=int, default=2,
                   help="passes over the whole grid, their samples pooled per point (default 2)")
    p.add_argument("--quick", action="store_true", help="coarse grid (about 10x fewer points) for a fast first table")
    p.add_argument("--fresh", action="store_true", help="start over instead of continuing an existing --out")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--compare", type=Path, default=None, metavar="OTHER",
                   help="measure nothing: report how well the --out table agrees with OTHER (same grid points)")
    return p


def main(argv=None) -> int:
    """Console entry point of profile-latency."""
    parser = build_parser()
    args = parser.parse_args(argv)
    models = tuple(m.strip() for m in args.model.split(",") if m.strip())
    if not models:
        parser.error("--model needs at least one model name")
    if args.threads < 1 or args.repeats < 1 or args.warmup < 0 or args.rounds < 1:
        parser.error("need --threads >= 1, --repeats >= 1, --warmup >= 0 and --rounds >= 1")
    if args.resolution is not None and args.resolution < 1:
        parser.error(f"--resolution must be a positive integer, got {args.resolution}")
    if args.compare is not None:
        if args.out is None:
            parser.error("--compare needs --out (the table to compare)")
        try:
            a, b = LatencyTable.load(args.out), LatencyTable.load(args.compare)
        except UsageError as e:
            print(f"profile-latency: error: {e}", file=sys.stderr)
            return 2
        within, points = a.agreement(b, tolerance=0.05)
        print(f"{within:.1%} of {points} common grid points agree within 5% ({args.out} vs {args.compare})")
        print(f"{a.agreement(b, tolerance=0.05, floor_ms=0.002)[0]:.1%} within 5% or 2 us (points of a few us "
              f"carry the timer's and the dispatch's noise); {a.agreement(b, tolerance=0.10)[0]:.1%} within 10%")
        return 0
    config = ProfileConfig(
        models=models, resolution=args.resolution, device=args.device, threads=args.threads,
        out=args.out or Path(f"{args.device}-{args.threads}t.json"), repeats=args.repeats, warmup=args.warmup,
        rounds=args.rounds,
        quick=args.quick, fresh=args.fresh, seed=args.seed,
        command="profile-latency " + " ".join(sys.argv[1:] if argv is None else argv),
    )
    try:
        table = profile(config, progress=not args.quiet, log=lambda m: print(m, file=sys.stderr))
    except UsageError as e:
        print(f"profile-latency: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {config.out}: {len(table.layers)} layer signatures, {len(table.ops)} ops "
          f"({', '.join(table.models)}; {table.threads} thread(s), engine {table.provenance['engine_version']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
