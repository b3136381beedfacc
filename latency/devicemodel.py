"""Cost model of our engine on Cortex-A53 / A72 boards; writes the shipped modelled tables."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latency.lut import Entry, LatencyTable, atomic_write, layer_axes, layer_key, op_axes, op_key, table_ops
from latency.netspec import load_shipped

TABLE_DIR = Path(__file__).resolve().parent / "tables"
TABLE_MODELS = ("resnet18", "mobilenet_v1", "mobilenet_v2", "resnet20", "resnet56", "vgg16")
THREADS = (1, 4)
SPARSE_EFFICIENCY = 0.4
SOURCES = (
    "ncnn benchmark/README.md (Tencent/ncnn): Raspberry Pi 3 Model B+ (Cortex-A53 @ 1.4 GHz) and "
    "Raspberry Pi 4 Model B (Cortex-A72 @ 1.8 GHz), fp32, 1 and 4 threads: mobilenet, resnet18, "
    "mobilenet_v2 at 224x224",
    "Elsen, Dukhan, Gale, Simonyan: Fast Sparse ConvNets (CVPR 2020): sparse 1x1 convolution on ARM "
    "runs at about 40% of the dense FLOP rate; 1.3-2.4x end to end at 70-90% sparsity",
)


@dataclass(frozen=True)
class Device:
    """A modelled board core: published dense latencies and the assumed (unfitted) constants."""

    name: str
    core: str
    published_ms: dict          # (model, threads) -> published end-to-end ms (ncnn, 224x224)
    bandwidth_gbs: dict         # threads -> assumed sustained memory bandwidth (GB/s)
    layer_overhead_us: dict     # threads -> assumed fixed cost per op (dispatch + thread barrier)


DEVICES = {
    "a53": Device(
        name="a53",
        core="Cortex-A53 @ 1.4 GHz (Raspberry Pi 3 Model B+)",
        published_ms={
            ("mobilenet_v1", 1): 206.0, ("resnet18", 1): 380.0, ("mobilenet_v2", 1): 159.0,
            ("mobilenet_v1", 4): 109.0, ("resnet18", 4): 272.0, ("mobilenet_v2", 4): 112.0,
        },
        bandwidth_gbs={1: 2.0, 4: 2.8},
        layer_overhead_us={1: 8.0, 4: 40.0},
    ),
    "a72": Device(
        name="a72",
        core="Cortex-A72 @ 1.8 GHz (Raspberry Pi 4 Model B)",
        published_ms={
            ("mobilenet_v1", 1): 124.0, ("resnet18", 1): 191.0, ("mobilenet_v2", 1): 93.0,
            ("mobilenet_v1", 4): 61.0, ("resnet18", 4): 123.0, ("mobilenet_v2", 4): 62.0,
        },
        bandwidth_gbs={1: 4.0, 4: 5.5},
        layer_overhead_us={1: 5.0, 4: 25.0},
    ),
}


@dataclass(frozen=True)
class CostModel:
    """Per-device, per-thread-count constants: ms per MAC for conv and depthwise work, ms per byte."""

    device: Device
    threads: int
    ms_per_mac: float
    ms_per_dw_mac: float

    @property
    def ms_per_byte(self) -> float:
        return 1e3 / (self.device.bandwidth_gbs[self.threads] * 1e9)

    @property
    def overhead_ms(self) -> float:
        return self.device.layer_overhead_us[self.threads] * 1e-3

    def layer_ms(self, layer, out_ch, in_ch, density) -> np.ndarray:
        """Modelled ms of a conv/fc LayerSpec at (broadcastable) out_ch, in_ch, density arrays."""
        return _combine(self._layer_terms(layer, out_ch, in_ch, density), self)

    def _layer_terms(self, layer, out_ch, in_ch, density):
        """(conv MACs, depthwise MACs, bytes moved, ops): the engine's sparse/dense choice folded in.

        Sparse kernels run kept MACs at SPARSE_EFFICIENCY of the dense rate, so the engine picks
        sparse below that density; sparse weights carry a 4-byte position code per 4x1 block.
        """
        out_ch = np.asarray(out_ch, dtype=float)
        in_ch = np.asarray(in_ch, dtype=float)
        density = np.asarray(density, dtype=float)
        pixels = float(layer.out_res ** 2)
        k2 = float(layer.kernel ** 2)
        if layer.kind == "depthwise":
            macs = out_ch * k2 * pixels
            moved = 4.0 * (out_ch * layer.in_res ** 2 + out_ch * pixels + out_ch * (k2 + 1))
            return np.zeros_like(macs), macs, moved, 1.0
        rows = np.ceil(out_ch / 4) * 4
        dense_macs = rows * in_ch * k2 * pixels
        sparse = density < SPARSE_EFFICIENCY
        macs = np.where(sparse, dense_macs * density / SPARSE_EFFICIENCY, dense_macs)
        weights = 4.0 * rows * in_ch * k2 * np.where(sparse, density * 1.25, 1.0)
        in_pixels = 1.0 if layer.kind == "fc" else float(layer.in_res ** 2)
        moved = 4.0 * (in_ch * in_pixels + out_ch * pixels) + weights
        return macs, np.zeros_like(macs), moved, 1.0

    def op_ms(self, op, channels) -> np.ndarray:
        """Modelled ms of a non-conv OpSpec at an array of channel counts."""
        return _combine(self._op_terms(op, channels), self)

    def _op_terms(self, op, channels):
        c = np.asarray(channels, dtype=float)
        area_in = float(op.in_res ** 2)
        area_out = float(op.out_res ** 2)
        zero = np.zeros_like(c)
        if op.kind == "add":
            return zero, zero, 4.0 * 3 * c * area_in, 1.0
        if op.kind == "input":
            return zero, zero, 4.0 * c * area_in, 1.0
        if op.kind == "maxpool":
            return zero, c * op.kernel ** 2 * area_out, 4.0 * c * (area_in + area_out), 1.0
        return zero, c * area_in, 4.0 * c * (area_in + 1), 1.0

    def network_terms(self, spec) -> np.ndarray:
        """(conv MACs, depthwise MACs, bytes, ops) of the unpruned network."""
        total = np.zeros(4)
        for layer in spec.layers:
            total += [float(np.sum(t)) for t in self._layer_terms(layer, layer.out_ch, layer.in_ch, 1.0)]
        for op in table_ops(spec):
            total += [float(np.sum(t)) for t in self._op_terms(op, op.channels)]
        return total

    def network_ms(self, spec) -> float:
        """Modelled ms of the unpruned network."""
        return float(_combine(tuple(self.network_terms(spec)), self))


def _combine(terms, model: CostModel):
    macs, dw_macs, moved, ops = terms
    return macs * model.ms_per_mac + dw_macs * model.ms_per_dw_mac + moved * model.ms_per_byte + ops * model.overhead_ms


@dataclass(frozen=True)
class Fit:
    """A calibrated CostModel and its residuals against the published figures."""

    model: CostModel
    rows: tuple                 # (model name, published ms, modelled ms)

    @property
    def residuals(self) -> list[float]:
        """Relative errors (modelled / published - 1)."""
        return [m / p - 1 for _, p, m in self.rows]


def fit(device: Device, threads: int) -> Fit:
    """Least-squares relative fit of ms per conv MAC and per depthwise MAC (both >= 0).

    Bandwidth and per-op overhead are assumed constants of the Device, not fitted.
    """
    probe = CostModel(device, threads, 0.0, 0.0)
    names = sorted(m for m, t in device.published_ms if t == threads)
    specs = [load_shipped(m) for m in names]
    terms = np.array([probe.network_terms(s) for s in specs])
    target = np.array([device.published_ms[(m, threads)] for m in names])
    fixed = terms[:, 2] * probe.ms_per_byte + terms[:, 3] * probe.overhead_ms
    a = terms[:, :2] / target[:, None]
    b = (target - fixed) / target
    best = None
    for cols in ((0, 1), (0,), (1,)):
        x = np.zeros(2)
        x[list(cols)] = np.linalg.lstsq(a[:, cols], b, rcond=None)[0]
        if (x < 0).any():
            continue
        err = float(np.sum((a @ x - b) ** 2))
        if best is None or err < best[0]:
            best = (err, x)
    model = CostModel(device, threads, float(best[1][0]), float(best[1][1]))
    rows = tuple((m, float(p), model.network_ms(s)) for m, p, s in zip(names, target, specs))
    return Fit(model, rows)


def sparse_speedup(model: CostModel, density: float) -> float:
    """Modelled end-to-end speedup of mobilenet_v1 with every pointwise conv at ``density``."""
    spec = load_shipped("mobilenet_v1")
    dense = sparse = 0.0
    for layer in spec.layers:
        d = density if layer.kind == "pointwise" else 1.0
        dense += float(model.layer_ms(layer, layer.out_ch, layer.in_ch, 1.0))
        sparse += float(model.layer_ms(layer, layer.out_ch, layer.in_ch, d))
    ops = sum(float(model.op_ms(op, op.channels)) for op in table_ops(spec))
    return (dense + ops) / (sparse + ops)


def _r(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def provenance(f: Fit) -> dict:
    """The provenance block of a modelled table: sources, assumptions, fitted values, residuals."""
    m = f.model
    return {
        "kind": "modelled",
        "device": m.device.core,
        "threads": m.threads,
        "model": (
            "per conv: max-rate MACs (4x1-block rows, sparse below density "
            f"{SPARSE_EFFICIENCY} at {SPARSE_EFFICIENCY:.0%} of the dense rate) * ms_per_mac + "
            "bytes moved (activations in/out, packed weights) * ms_per_byte + op_overhead; "
            "depthwise and pooling windows at ms_per_dw_mac; adds and pools memory-bound"
        ),
        "command": "python -m latency.devicemodel",
        "sources": list(SOURCES),
        "assumed": {
            "bandwidth_gbs": m.device.bandwidth_gbs[m.threads],
            "op_overhead_us": m.device.layer_overhead_us[m.threads],
            "sparse_efficiency": SPARSE_EFFICIENCY,
        },
        "fitted": {
            "conv_gmacs": _r(1e-6 / m.ms_per_mac) if m.ms_per_mac else None,
            "depthwise_gmacs": _r(1e-6 / m.ms_per_dw_mac) if m.ms_per_dw_mac else None,
        },
        "fit_residuals": [
            {"model": n, "published_ms": p, "modelled_ms": _r(mod), "residual": _r(mod / p - 1, 3)}
            for n, p, mod in f.rows
        ],
        "check_sparse_speedup_mobilenet_v1": {
            "density_0.3": _r(sparse_speedup(m, 0.3), 3),
            "density_0.1": _r(sparse_speedup(m, 0.1), 3),
        },
    }


def build_table(device: str, threads: int, models=TABLE_MODELS) -> LatencyTable:
    """The modelled table of ``device`` at ``threads`` over the default grids of ``models``."""
    f = fit(DEVICES[device], threads)
    layers, ops, covered = {}, {}, []
    for name in models:
        spec = load_shipped(name)
        covered.append(f"{spec.model}@{spec.resolution}")
        for layer in spec.layers:
            key = layer_key(layer)
            if key in layers:
                continue
            axes = layer_axes(layer)
            o = np.asarray(axes["out_ch"], dtype=float)[:, None, None]
            i = o if axes["in_ch"] is None else np.asarray(axes["in_ch"], dtype=float)[None, :, None]
            d = np.ones(1) if axes["density"] is None else np.asarray(axes["density"])[None, None, :]
            mean = np.broadcast_to(f.model.layer_ms(layer, o, i, d), _shape(axes))
            layers[key] = Entry.build(key, axes, mean)
        for op in table_ops(spec):
            key = op_key(op)
            if key not in ops:
                axes = op_axes(op)
                ops[key] = Entry.build(key, axes, f.model.op_ms(op, np.asarray(axes["out_ch"], dtype=float)))
    return LatencyTable(device=device, threads=threads, provenance=provenance(f), layers=layers, ops=ops, models=covered)


def _shape(axes: dict) -> tuple:
    return tuple(1 if axes[a] is None else len(axes[a]) for a in ("out_ch", "in_ch", "density"))


def table_path(device: str, threads: int, directory: Path = TABLE_DIR) -> Path:
    """Where the shipped table of ``device`` at ``threads`` lives."""
    return Path(directory) / f"{device}-{threads}t.json"


def main(argv=None) -> int:
    """python -m latency.devicemodel [--out-dir DIR] [--check]: (re)write or verify the shipped tables."""
    p = argparse.ArgumentParser(prog="python -m latency.devicemodel", description=__doc__)
    p.add_argument("--out-dir", type=Path, default=TABLE_DIR, help="where to write the tables (default: the package's)")
    p.add_argument("--check", action="store_true", help="only verify the files there are byte-identical to a regeneration")
    args = p.parse_args(argv)
    stale = []
    for device in DEVICES:
        for threads in THREADS:
            path = table_path(device, threads, args.out_dir)
            text = build_table(device, threads).to_json()
            if args.check:
                if not path.is_file() or path.read_text() != text:
                    stale.append(str(path))
                continue
            atomic_write(path, text)
            f = fit(DEVICES[device], threads)
            res = ", ".join(f"{n} {m:.0f}/{p:.0f} ms ({m / p - 1:+.1%})" for n, p, m in f.rows)
            print(f"{path}: modelled/published {res}")
    if stale:
        print("stale or missing: " + ", ".join(stale) + "; run python -m latency.devicemodel", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
