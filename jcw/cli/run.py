"""python -m jcw.run: run an ONNX model through the jcw engine; optional benchmark and onnxruntime comparison."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jcw.engine import MODES, Engine
from jcw.core.errors import UsageError
from jcw.engine.compare import ort_run, ort_session, output_diff, timed_pair
from jcw.engine.graph import load_model

AGREE_REL = 1e-4  # max |engine - onnxruntime| / max |onnxruntime| accepted as agreement
PREDICTED_KEY = "jcw.predicted_ms"
PREDICTED_THREADS_KEY = "jcw.predicted_threads"


@dataclass
class RunConfig:
    """What `python -m jcw.run` does; every field is one command-line flag."""

    model: Path
    input: Path | None = None
    batch: int = 1
    seed: int = 0
    threads: int = 1
    mode: str = "auto"
    bench: bool = False
    repeats: int = 50
    warmup: int = 5
    compare_ort: bool = False
    device: str = "host"
    plan: bool = False


def load_input(config: RunConfig, shape: tuple[int, int, int]) -> np.ndarray:
    """The .npy input (a (C, H, W) image or an (N, C, H, W) batch) or a seeded standard-normal batch."""
    if config.input is None:
        return np.random.default_rng(config.seed).standard_normal((config.batch, *shape), dtype=np.float32)
    try:
        x = np.load(config.input, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read --input {config.input} as a .npy array: {exc}") from None
    if not np.issubdtype(x.dtype, np.floating):
        raise UsageError(f"--input {config.input} has dtype {x.dtype}; a float array is needed")
    if x.ndim == 3:
        x = x[None]
    return np.ascontiguousarray(x, dtype=np.float32)


def predicted_ms(metadata: dict[str, str], device: str) -> tuple[float | None, str]:
    """The export-time latency prediction for `device` from the ONNX metadata, or None and why not."""
    if PREDICTED_KEY not in metadata:
        return None, f"no '{PREDICTED_KEY}' in the model metadata"
    try:
        table = json.loads(metadata[PREDICTED_KEY])
        return float(table[device]), ""
    except KeyError:
        return None, f"no prediction for device '{device}' (the model has: {', '.join(sorted(table))})"
    except (ValueError, TypeError):
        return None, f"'{PREDICTED_KEY}' is not a JSON object of device -> ms"


def predicted_threads(metadata: dict[str, str], device: str) -> int | None:
    """Threads the prediction for `device` assumed, when the metadata says."""
    try:
        return int(json.loads(metadata[PREDICTED_THREADS_KEY])[device])
    except (KeyError, ValueError, TypeError):
        return None


def _stats(ms: np.ndarray) -> str:
    p10, p50, p90 = np.percentile(ms, [10, 50, 90])
    return f"median {p50:.3f} ms  p10 {p10:.3f}  p90 {p90:.3f}  ({ms.size} runs)"


def run(config: RunConfig, out=sys.stdout) -> int:
    """Run the model as configured, printing the report to `out`; returns 0, or 1 when the outputs disagree."""
    model = load_model(config.model)
    engine = Engine(model, threads=config.threads, mode=config.mode)
    x = load_input(config, engine.input_shape)
    y = engine.run(x)
    kinds = [p.kernel for p in engine.plan if p.kernel]
    print(f"model   {config.model}: input {engine.input_name} {tuple(x.shape)}, {len(engine.plan)} steps "
          f"({kinds.count('sparse')} sparse, {kinds.count('dense')} dense layers), threads {config.threads}", file=out)
    if config.plan:
        print(engine.summary(), file=out)
    print(f"output  shape {tuple(y.shape)}  mean {y.mean():.6g}  std {y.std():.6g}  min {y.min():.6g}  "
          f"max {y.max():.6g}", file=out)
    first = y[0].reshape(-1)
    top = np.argsort(-first, kind="stable")[:5]
    print("top-5   (image 0) " + "  ".join(f"{i}: {first[i]:.5g}" for i in top), file=out)
    if config.bench:
        ms = engine.benchmark(x, config.repeats, config.warmup)
        print(f"engine  {_stats(ms)}", file=out)
        pred, why = predicted_ms(engine.metadata, config.device)
        if pred is None:
            print(f"predicted ({config.device}): {why}", file=out)
        else:
            med = float(np.median(ms))
            threads = predicted_threads(engine.metadata, config.device)
            note = f" (the prediction is for {threads} threads)" if threads not in (None, config.threads) else ""
            print(f"predicted ({config.device}) {pred:.3f} ms, measured {med:.3f} ms, "
                  f"error {100 * (med - pred) / pred:+.1f}%{note}", file=out)
    if not config.compare_ort:
        return 0
    session = ort_session(model, config.threads)
    want = np.concatenate([ort_run(session, x[i:i + 1]) for i in range(x.shape[0])])
    abs_err, rel_err = output_diff(y, want.reshape(y.shape))
    agree = rel_err <= AGREE_REL
    print(f"compare max abs diff {abs_err:.3g}, max rel diff {rel_err:.3g} -> "
          f"{'outputs agree' if agree else 'OUTPUTS DISAGREE'} (tolerance {AGREE_REL:g} relative)", file=out)
    engine_ms, ort_ms = timed_pair(engine, session, x[:1], config.repeats, config.warmup)
    print(f"engine  (1 image, interleaved) {_stats(engine_ms)}", file=out)
    print(f"ort     (1 image, interleaved) {_stats(ort_ms)}", file=out)
    print(f"speedup {np.median(ort_ms) / np.median(engine_ms):.2f}x vs onnxruntime ({config.threads} thread(s))",
          file=out)
    return 0 if agree else 1


def parse_args(argv=None) -> RunConfig:
    """Command line -> RunConfig (argparse exits 2 on usage errors)."""
    p = argparse.ArgumentParser(prog="jcw run", description=__doc__)
    p.add_argument("model", type=Path, help="the .onnx file")
    p.add_argument("--input", type=Path, help=".npy float array, (C, H, W) or (N, C, H, W); default: random")
    p.add_argument("--batch", type=int, default=1, help="batch size of the random input (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input (default 0)")
    p.add_argument("--threads", type=int, default=1, help="engine and onnxruntime threads (default 1)")
    p.add_argument("--mode", choices=MODES, default="auto", help="per-layer kernel choice (default auto)")
    p.add_argument("--bench", action="store_true", help="time warm repeats: median, p10, p90")
    p.add_argument("--repeats", type=int, default=50, help="timed runs for --bench / --compare-ort (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    p.add_argument("--compare-ort", action="store_true",
                   help="also run onnxruntime on the same file: output agreement and speedup")
    p.add_argument("--device", default="host", help="device whose predicted latency --bench shows (default host)")
    p.add_argument("--plan", action="store_true", help="print the per-layer plan (kernel, density, fusion)")
    a = p.parse_args(argv)
    for flag, value, low in (("--batch", a.batch, 1), ("--threads", a.threads, 1), ("--repeats", a.repeats, 1),
                             ("--warmup", a.warmup, 0)):
        if value < low:
            p.error(f"{flag} must be >= {low}, got {value}")
    return RunConfig(model=a.model, input=a.input, batch=a.batch, seed=a.seed, threads=a.threads, mode=a.mode,
                     bench=a.bench, repeats=a.repeats, warmup=a.warmup, compare_ort=a.compare_ort, device=a.device,
                     plan=a.plan)


def main(argv=None) -> int:
    """Entry point: exit 0 on success, 1 when the engine and onnxruntime disagree, 2 on bad input."""
    config = parse_args(argv)
    try:
        return run(config)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
