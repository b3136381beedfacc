"""End-to-end benchmark: jcw engine vs onnxruntime on the same ONNX file, ImageNet zoo models dense and joint-pruned."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from tqdm import tqdm

from jcw.engine import ENGINE_VERSION, Engine
from jcw.engine.compare import ort_session, timed_pair
from jcw.export import export_onnx
from jcw.prune.materialize import materialize
from jcw.models import create_model, default_resolution, list_models
from jcw.core.space import Bounds, SearchSpace
from jcw.core.util import atomic_write

# arch label -> (channel ratio of every coupling group, density of every non-depthwise conv but the stem)
ARCHS = {"dense": (1.0, 1.0), "c0.75-d0.3": (0.75, 0.3), "c0.5-d0.5": (0.5, 0.5), "c1.0-d0.2": (1.0, 0.2)}


@dataclass
class ModelsBenchConfig:
    models: list[str] = field(default_factory=lambda: [m for m in list_models() if default_resolution(m) == 224])
    archs: list[str] = field(default_factory=lambda: list(ARCHS))
    threads: int = 1
    repeats: int = 30
    warmup: int = 5
    seed: int = 0
    json_path: Path | None = None
    quiet: bool = False


def joint_arch(model_name: str, channels: float, density: float):
    """The Arch with every coupling group at `channels` and every non-depthwise conv but the stem at `density`."""
    space = SearchSpace.for_model(model_name, bounds=Bounds(**{k: 0.0 for k in Bounds.__dataclass_fields__}))
    densities = [1.0 if space.spec.layers[i].kind == "stem" else density for i in space.density_layers]
    return space, space.decode(np.array([channels] * space.n_channel_genes + densities))


def calibrate_batchnorm(model: torch.nn.Module, resolution: int, generator: torch.Generator, batches: int = 2,
                        batch_size: int = 4) -> torch.nn.Module:
    """Re-estimate BatchNorm statistics on random images, as fine-tuning would: a randomly initialised model with
    80% of its blocks zeroed otherwise shrinks its activations layer by layer into float denormals, which slow
    every engine down and make the timings meaningless."""
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(batch_size, 3, resolution, resolution, generator=generator))
    return model.eval()


def build_onnx(model_name: str, arch_label: str, seed: int, path: Path) -> onnx.ModelProto:
    """Materialize the zoo model at the labelled arch (channel slicing + 4x1 block masks), calibrate its BatchNorm
    statistics and export it with jcw.export."""
    channels, density = ARCHS[arch_label]
    space, arch = joint_arch(model_name, channels, density)
    torch_gen = torch.Generator().manual_seed(seed)
    model = create_model(model_name).eval()
    small, _ = materialize(model, arch, spec=space.spec, generator=torch_gen)
    calibrate_batchnorm(small, space.spec.resolution, torch_gen)
    return onnx.load(str(export_onnx(small, path, space.spec.resolution)))


def bench(config: ModelsBenchConfig) -> list[dict]:
    """One row per (model, arch): median (and min) engine and onnxruntime ms, timed interleaved on one image."""
    rows = []
    jobs = [(m, a) for m in config.models for a in config.archs]
    with tempfile.TemporaryDirectory() as tmp:
        for model_name, arch_label in tqdm(jobs, desc="models", disable=config.quiet):
            proto = build_onnx(model_name, arch_label, config.seed, Path(tmp) / "model.onnx")
            engine = Engine(proto, threads=config.threads)
            session = ort_session(proto, config.threads)
            shape = (1,) + engine.input_shape
            x = np.random.default_rng(config.seed).standard_normal(shape, dtype=np.float32)
            engine_ms, ort_ms = timed_pair(engine, session, x, config.repeats, config.warmup)
            sparse = sum(p.kernel == "sparse" for p in engine.plan)
            rows.append({"model": model_name, "arch": arch_label, "resolution": engine.input_shape[1], "engine_ms": float(np.median(engine_ms)),
                         "ort_ms": float(np.median(ort_ms)), "speedup": float(np.median(ort_ms) / np.median(engine_ms)),
                         "engine_min_ms": float(engine_ms.min()), "ort_min_ms": float(ort_ms.min()),
                         "sparse_layers": sparse, "threads": config.threads, "engine_version": ENGINE_VERSION})
    return rows


def table(rows: list[dict]) -> str:
    """Rows as a markdown table."""
    lines = ["| model | arch | input | engine ms | onnxruntime ms | speedup | engine min ms | onnxruntime min ms | "
             "speedup of mins | sparse layers |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['arch']} | {r['resolution']} | {r['engine_ms']:.2f} | {r['ort_ms']:.2f} | "
              f"{r['speedup']:.2f}x | {r['engine_min_ms']:.2f} | {r['ort_min_ms']:.2f} | "
              f"{r['ort_min_ms'] / r['engine_min_ms']:.2f}x | {r['sparse_layers']} |" for r in rows]
    return "\n".join(lines)


def write_json(rows: list[dict], path: Path) -> None:
    """Atomic write (temp file + os.replace)."""
    atomic_write(path, json.dumps(rows, indent=1) + "\n")


def parse_args(argv=None) -> ModelsBenchConfig:
    defaults = ModelsBenchConfig()
    p = argparse.ArgumentParser(prog="python benchmarks/models.py", description=__doc__)
    p.add_argument("--models", nargs="+", default=defaults.models, choices=list_models(), metavar="MODEL",
                   help=f"zoo models (default: {' '.join(defaults.models)})")
    p.add_argument("--archs", nargs="+", default=defaults.archs, choices=list(ARCHS), metavar="ARCH",
                   help=f"archs (default: all of {' '.join(ARCHS)})")
    p.add_argument("--threads", type=int, default=1, help="engine and onnxruntime threads (default 1)")
    p.add_argument("--repeats", type=int, default=30, help="timed runs of each (default 30)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs of each first (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the input and channel order (default 0)")
    p.add_argument("--json", type=Path, dest="json_path", help="also write the rows as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    for flag, value, low in (("--threads", a.threads, 1), ("--repeats", a.repeats, 1), ("--warmup", a.warmup, 0)):
        if value < low:
            p.error(f"{flag} must be >= {low}, got {value}")
    return ModelsBenchConfig(models=a.models, archs=a.archs, threads=a.threads, repeats=a.repeats, warmup=a.warmup,
                             seed=a.seed, json_path=a.json_path, quiet=a.quiet)


def main(argv=None) -> int:
    config = parse_args(argv)
    rows = bench(config)
    print(f"engine {ENGINE_VERSION}, {config.threads} thread(s), median and min of {config.repeats} interleaved "
          f"runs, batch 1")
    print(table(rows))
    if config.json_path:
        write_json(rows, config.json_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
