"""profile-latency: measure per-layer latency grids of our engine on this machine into a LatencyTable."""

from __future__ import annotations

import argparse
import datetime
import platform
import shutil
import socket
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latency.lut import (
    Entry, LatencyTable, LatencyTableError, describe_key, layer_axes, layer_key, op_axes, op_key, table_ops,
)
from latency.netspec import load_shipped

IMAGENET_ZOO = ("resnet18", "mobilenet_v1", "mobilenet_v2")
MAX_REPEAT_FACTOR = 20


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
    min_time_ms: float = 20.0         # fast points get more repeats, up to 20x, until this much is timed
    quick: bool = False
    fresh: bool = False
    seed: int = 0
    command: str = ""


class ProfileError(ValueError):
    """A profiling request that cannot be honoured (bad model, resolution, or incompatible --out)."""


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
    from jcw import kernels
    from jcw.engine import ENGINE_VERSION

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
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "numpy": np.__version__,
    }
    return info, warnings


def block_pruned(shape: tuple, density: float, rng: np.random.Generator) -> np.ndarray:
    """Random OIHW float32 weights keeping round(density * blocks) random 4x1 blocks along out_ch."""
    out_ch, rest = shape[0], int(np.prod(shape[1:]))
    rows = -(-out_ch // 4)
    blocks = rows * rest
    keep = np.zeros(blocks, dtype=bool)
    keep[rng.permutation(blocks)[: int(round(density * blocks))]] = True
    mask = np.repeat(keep.reshape(rows, 1, rest), 4, axis=1).reshape(rows * 4, rest)[:out_ch]
    w = rng.standard_normal((out_ch, rest), dtype=np.float32) * mask
    return w.reshape(shape)


def _onnx(nodes, inits, in_shape, out_shape):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes, "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *in_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, *out_shape])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=onnx.IR_VERSION)


class Timer:
    """Times layers and ops with the engine: warm-up, repeats (more for fast ones), all samples kept."""

    def __init__(self, threads: int, repeats: int, warmup: int, min_time_ms: float):
        self.threads, self.repeats, self.warmup, self.min_time_ms = threads, repeats, warmup, min_time_ms

    def _extend(self, run) -> np.ndarray:
        samples = np.asarray(run(self.repeats, self.warmup), dtype=float)
        med = max(float(np.median(samples)), 1e-4)
        extra = min(int(self.min_time_ms / med) - self.repeats, (MAX_REPEAT_FACTOR - 1) * self.repeats)
        if extra > 0:
            samples = np.concatenate([samples, np.asarray(run(extra, 0), dtype=float)])
        return samples

    def conv(self, weight, bias, stride, padding, groups, in_res, residual=False) -> np.ndarray:
        from jcw.engine import time_conv

        return self._extend(lambda r, w: time_conv(weight, bias, stride, padding, groups, in_res, act="relu",
                                                   residual=residual, threads=self.threads, repeats=r, warmup=w))

    def step(self, model, in_shape, rng, whole=False) -> np.ndarray:
        """Samples of the last step of an ONNX model inside whole runs (or of whole runs)."""
        from jcw.engine import Engine

        engine = Engine(model, threads=self.threads)
        x = rng.standard_normal((1, *in_shape), dtype=np.float32)
        if whole:
            return self._extend(lambda r, w: engine.benchmark(x, repeats=r, warmup=w))

        def run(r, w):
            for _ in range(w):
                engine.run(x)
            return [list(engine.profile(x, repeats=1, warmup=0).values())[-1] for _ in range(r)]

        return self._extend(run)

    def layer(self, layer, out_ch: int, in_ch: int, density: float, rng) -> np.ndarray:
        """Samples (ms) of a conv/fc LayerSpec pruned to (out_ch, in_ch, density)."""
        k = layer.kernel
        bias = rng.standard_normal(out_ch, dtype=np.float32)
        if layer.kind == "fc":
            from onnx import helper

            w = block_pruned((out_ch, in_ch), density, rng)
            nodes = [helper.make_node("Flatten", ["x"], ["f"], axis=1),
                     helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)]
            return self.step(_onnx(nodes, {"w": w, "b": bias}, (in_ch, 1, 1), (out_ch,)), (in_ch, 1, 1), rng)
        if layer.kind == "depthwise":
            w = rng.standard_normal((out_ch, 1, k, k), dtype=np.float32)
            return self.conv(w, bias, layer.stride, layer.padding, out_ch, layer.in_res)
        w = block_pruned((out_ch, in_ch, k, k), density, rng)
        return self.conv(w, bias, layer.stride, layer.padding, 1, layer.in_res)

    def op(self, op, channels: int, rng) -> np.ndarray:
        """Samples (ms) of a non-conv op at ``channels`` (an add: the cost of fusing it into a conv)."""
        from onnx import helper

        r = op.in_res
        if op.kind == "add":
            zero = np.zeros((channels, channels, 1, 1), dtype=np.float32)
            bias = rng.standard_normal(channels, dtype=np.float32)
            fused = self.conv(zero, bias, 1, 0, 1, r, residual=True)
            plain = self.conv(zero, bias, 1, 0, 1, r)
            n = min(len(fused), len(plain))
            return np.maximum(np.sort(fused)[:n] - np.sort(plain)[:n], 0.0)
        if op.kind == "maxpool":
            out = op.out_res
            node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[op.kernel] * 2,
                                    strides=[op.stride] * 2, pads=[op.padding] * 4)
            return self.step(_onnx([node], {}, (channels, r, r), (channels, out, out)), (channels, r, r), rng)
        node = helper.make_node("GlobalAveragePool", ["x"], ["y"])
        model = _onnx([node], {}, (channels, r, r), (channels, 1, 1))
        if op.kind == "avgpool":
            return self.step(model, (channels, r, r), rng)
        whole = self.step(model, (channels, r, r), rng, whole=True)
        pool = self.step(model, (channels, r, r), rng)
        n = min(len(whole), len(pool))
        return np.maximum(np.sort(whole)[:n] - np.sort(pool)[:n], 0.0)


def _stats(samples: np.ndarray) -> tuple[float, float, int]:
    return float(np.median(samples)), float(np.std(samples)), int(len(samples))


def _measure(item, key: tuple, axes: dict, timer: Timer, rng, tick) -> Entry:
    """The grid of one layer or op, point by point."""
    shape = tuple(1 if axes[a] is None else len(axes[a]) for a in ("out_ch", "in_ch", "density"))
    mean, std, count = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for idx in np.ndindex(*shape):
        o = axes["out_ch"][idx[0]]
        if hasattr(item, "signature"):
            i = o if axes["in_ch"] is None else axes["in_ch"][idx[1]]
            d = 1.0 if axes["density"] is None else axes["density"][idx[2]]
            samples = timer.layer(item, o, i, d, rng)
        else:
            samples = timer.op(item, o, rng)
        mean[idx], std[idx], count[idx] = _stats(samples)
        tick()
    return Entry.build(key, axes, mean, std, count)


def _specs(config: ProfileConfig) -> list:
    specs = []
    for name in config.models:
        try:
            spec = load_shipped(name)
            if config.resolution is not None:
                spec = spec.at_resolution(config.resolution)
        except ValueError as e:
            raise ProfileError(str(e)) from None
        specs.append(spec)
    return specs


def _start(config: ProfileConfig, info: dict) -> LatencyTable:
    """The table to continue: the existing --out when it was measured the same way, else a new one."""
    empty = LatencyTable(device=config.device, threads=config.threads, provenance=info)
    if config.fresh or not Path(config.out).exists():
        return empty
    try:
        old = LatencyTable.load(config.out)
    except LatencyTableError as e:
        raise ProfileError(f"{e}; pass --fresh to overwrite it") from None
    p = old.provenance
    want = {"kind": "measured", "engine_version": info["engine_version"], "threads": config.threads,
            "grid": info["grid"], "repeats": info["repeats"], "cpu": info["cpu"]}
    diff = [f"{k} {p.get(k)!r} (now {v!r})" for k, v in want.items() if p.get(k) != v]
    if old.device != config.device:
        diff.append(f"device {old.device!r} (now {config.device!r})")
    if diff:
        raise ProfileError(f"{config.out} was measured differently: {', '.join(diff)}; pass --fresh to "
                           f"overwrite it or choose another --out")
    return old


def profile(config: ProfileConfig, progress: bool = True, log=print) -> LatencyTable:
    """Measure every missing layer signature and op of ``config.models`` and save after each one.

    A table already at ``config.out`` measured the same way is continued (a re-run resumes).
    """
    if config.threads < 1 or config.repeats < 1 or config.warmup < 0:
        raise ProfileError("need --threads >= 1, --repeats >= 1 and --warmup >= 0")
    specs = _specs(config)
    info, warnings = machine_info(config.threads)
    info.update(device=config.device, grid="quick" if config.quick else "full", repeats=config.repeats,
                warmup=config.warmup, warnings=warnings, complete=False, command=config.command)
    for w in warnings:
        log(f"warning: {w}")
    table = _start(config, info)
    table.provenance = {**info, "date": table.provenance.get("date", info["date"])}
    todo, seen = [], set(table.layers) | set(table.ops)
    for spec in specs:
        tag = f"{spec.model}@{spec.resolution}"
        if tag not in table.models:
            table.models.append(tag)
        items = [(x, layer_key(x), layer_axes(x, config.quick)) for x in spec.layers]
        items += [(x, op_key(x), op_axes(x, config.quick)) for x in table_ops(spec)]
        for item, key, axes in items:
            if key not in seen:
                seen.add(key)
                todo.append((item, key, axes))
    total = sum(int(np.prod([1 if v is None else len(v) for v in axes.values()])) for _, _, axes in todo)
    timer = Timer(config.threads, config.repeats, config.warmup, config.min_time_ms)
    from tqdm import tqdm

    with tqdm(total=total, disable=not progress, unit="pt", desc=f"profile {config.device}") as bar:
        for item, key, axes in todo:
            bar.set_postfix_str(describe_key(key))
            rng = np.random.default_rng([config.seed, zlib.crc32(describe_key(key).encode())])
            entry = _measure(item, key, axes, timer, rng, lambda: bar.update(1))
            (table.layers if hasattr(item, "signature") else table.ops)[key] = entry
            table.save(config.out)
    table.provenance["complete"] = True
    table.save(config.out)
    return table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="profile-latency",
        description="Measure per-layer latency tables of the jcw engine on this machine (numpy + onnx only).",
    )
    p.add_argument("--model", default=",".join(IMAGENET_ZOO),
                   help="comma-separated zoo models (default: the ImageNet zoo %(default)s)")
    p.add_argument("--resolution", type=int, default=None, help="input size (default: each model's own)")
    p.add_argument("--device", default="host", help="label naming the table: a53, a72, host or anything (default host)")
    p.add_argument("--threads", type=int, default=1, help="engine threads (default 1); a table is per thread count")
    p.add_argument("--out", type=Path, default=None, help="table file (default DEVICE-THREADSt.json); continued if present")
    p.add_argument("--repeats", type=int, default=15, help="timed runs per grid point, more for fast layers (default 15)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs before timing (default 3)")
    p.add_argument("--min-time", type=float, default=20.0, metavar="MS",
                   help="time fast grid points for at least this many ms in all, up to 20x --repeats (default 20)")
    p.add_argument("--quick", action="store_true", help="coarse grid (about 10x fewer points) for a fast first table")
    p.add_argument("--fresh", action="store_true", help="start over instead of continuing an existing --out")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    """Console entry point of profile-latency."""
    parser = build_parser()
    args = parser.parse_args(argv)
    models = tuple(m.strip() for m in args.model.split(",") if m.strip())
    if not models:
        parser.error("--model needs at least one model name")
    if args.threads < 1 or args.repeats < 1 or args.warmup < 0 or args.min_time < 0:
        parser.error("need --threads >= 1, --repeats >= 1, --warmup >= 0 and --min-time >= 0")
    if args.resolution is not None and args.resolution < 1:
        parser.error(f"--resolution must be a positive integer, got {args.resolution}")
    config = ProfileConfig(
        models=models, resolution=args.resolution, device=args.device, threads=args.threads,
        out=args.out or Path(f"{args.device}-{args.threads}t.json"), repeats=args.repeats, warmup=args.warmup,
        min_time_ms=args.min_time,
        quick=args.quick, fresh=args.fresh, seed=args.seed,
        command="profile-latency " + " ".join(sys.argv[1:] if argv is None else argv),
    )
    try:
        table = profile(config, progress=not args.quiet, log=lambda m: print(m, file=sys.stderr))
    except ProfileError as e:
        print(f"profile-latency: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {config.out}: {len(table.layers)} layer signatures, {len(table.ops)} ops "
          f"({', '.join(table.models)}; {table.threads} thread(s), engine {table.provenance['engine_version']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
