"""Latency prediction accuracy: random joint-pruned archs, materialized, exported, timed on the engine."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class AccuracyConfig:
    model: str
    archs: int = 100
    lut: Path | None = None       # None: the cached host table (profiled on first use)
    json: Path | None = None
    resolution: int | None = None
    threads: int = 1
    repeats: int = 20
    warmup: int = 3
    rounds: int = 3
    seed: int = 0
    quiet: bool = False


def random_genomes(space, n: int, rng: np.random.Generator) -> np.ndarray:
    """n genomes drawn uniformly between every gene's lower and upper bound, snapped to the grid."""
    return space.snap(rng.uniform(space.lower, space.upper, (n, space.n_genes)))


def summarize(predicted: np.ndarray, measured: np.ndarray) -> dict:
    """median |error|, p95 |error|, fraction within +-5% / +-10%, RMSPE (errors relative to measured)."""
    err = predicted / measured - 1
    return {
        "median_abs_err": float(np.median(np.abs(err))),
        "p95_abs_err": float(np.percentile(np.abs(err), 95)),
        "within_5": float(np.mean(np.abs(err) <= 0.05)),
        "within_10": float(np.mean(np.abs(err) <= 0.10)),
        "rmspe": float(np.sqrt(np.mean(err ** 2))),
        "mean_err": float(np.mean(err)),
    }


def throughput(predictor, space, rng: np.random.Generator, n: int = 100_000) -> float:
    """Archs per second of Predictor.predict on n decoded random genomes (best of 3, decoding excluded)."""
    import time

    arrays = space.decode_arrays(random_genomes(space, n, rng))
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        predictor.predict(*arrays)
        best = min(best, time.perf_counter() - t)
    return n / best


def run(config: AccuracyConfig) -> dict:
    """Predict and measure ``config.archs`` random archs; returns the summary with one row per arch.

    Measured = the lowest of ``rounds`` medians, each round timing every arch once in turn.  Every
    materialized arch gets its BatchNorm statistics re-estimated on random images (as fine-tuning
    would); a randomly initialised pruned net otherwise decays into float denormals, which are slow.
    """
    import torch
    from tqdm import tqdm

    from jcw.engine import ENGINE_VERSION, Engine
    from jcw.export import export_onnx
    from jcw.materialize import materialize
    from jcw.models import create_model
    from jcw.space import SearchSpace
    from latency.devices import resolve_table
    from latency.lut import LatencyTable
    from latency.predictor import Predictor
    from latency.profile import reference_timer
    from models import calibrate_batchnorm

    space = SearchSpace.for_model(config.model, config.resolution)
    spec = space.spec
    table = LatencyTable.load(config.lut) if config.lut else resolve_table(
        "host", config.model, config.threads, spec.resolution, progress=not config.quiet)
    measured_with = table.provenance.get("engine_version")
    if table.kind == "measured" and measured_with != ENGINE_VERSION:
        raise ValueError(f"the table was measured with engine {measured_with}, this is {ENGINE_VERSION}: "
                         f"re-profile (profile-latency --fresh) before comparing")
    predictor = Predictor(table, spec)
    rng = np.random.default_rng(config.seed)
    genomes = random_genomes(space, config.archs, rng)
    predicted = predictor.predict(*space.decode_arrays(genomes))
    base = create_model(config.model)
    base.eval()
    x = rng.standard_normal((1, 3, spec.resolution, spec.resolution), dtype=np.float32)
    gen = torch.Generator().manual_seed(config.seed)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for n in tqdm(range(config.archs), disable=config.quiet, desc=f"{config.model} export"):
            small, _ = materialize(base, space.decode(genomes[n]), spec=spec, generator=gen)
            calibrate_batchnorm(small, spec.resolution, gen)
            paths.append(export_onnx(small, Path(tmp) / f"arch{n}.onnx", spec.resolution))
        rounds = np.zeros((config.rounds, config.archs))
        # The full-width network the profiler times between its runs, timed here every 20 archs:
        # the machine's speed while measuring, to hold against the table's (provenance.reference_ms).
        reference = reference_timer(spec, config.threads, config.repeats, config.warmup, config.seed)
        reference_ms = []
        for r in tqdm(range(config.rounds * config.archs), disable=config.quiet, desc=f"{config.model} timing"):
            if r % 20 == 0:
                reference_ms.append(reference())
            engine = Engine(paths[r % config.archs], threads=config.threads)
            ms = engine.benchmark(x, repeats=config.repeats, warmup=config.warmup)
            rounds[r // config.archs, r % config.archs] = np.median(ms)
        reference_ms.append(reference())
    measured = rounds.min(axis=0)
    rows = [{"arch": n, "predicted_ms": float(predicted[n]), "measured_ms": float(measured[n]),
             "error": float(predicted[n] / measured[n] - 1), "round_ms": rounds[:, n].tolist(),
             "genes": genomes[n].tolist()} for n in range(config.archs)]
    result = summarize(np.array([r["predicted_ms"] for r in rows]), np.array([r["measured_ms"] for r in rows]))
    result.update(model=config.model, resolution=spec.resolution, threads=config.threads, archs=config.archs,
                  engine_version=ENGINE_VERSION, predictor_archs_per_s=throughput(predictor, space, rng),
                  seed=config.seed, table=str(config.lut) if config.lut else "host (cached)",
                  reference_ms=reference_ms,
                  table_reference_ms=table.provenance.get("reference_ms", {}).get(f"{config.model}@{spec.resolution}"),
                  table_provenance=table.provenance, rows=rows)
    return result


def _speed_line(when: str, ms) -> str:
    """The full-width reference network's times: the machine's speed at that moment."""
    if not ms:
        return f"full-width network {when}: not recorded"
    return (f"full-width network {when}: {min(ms):.2f} / {float(np.median(ms)):.2f} / {max(ms):.2f} ms "
            f"(min / median / max of {len(ms)})")


def report(result: dict, worst: int = 5) -> str:
    """Human-readable summary and the worst archs."""
    lines = [
        f"{result['model']} @ {result['resolution']}, {result['threads']} thread(s), {result['archs']} random archs "
        f"(seed {result['seed']}), table: {result['table']}",
        f"median |error| {result['median_abs_err']:.2%}   p95 |error| {result['p95_abs_err']:.2%}   "
        f"within +-5% {result['within_5']:.0%}   within +-10% {result['within_10']:.0%}   "
        f"RMSPE {result['rmspe']:.2%}   mean error {result['mean_err']:+.2%}",
        f"predictor: {result['predictor_archs_per_s']:,.0f} archs/s",
        _speed_line("while measuring", result.get("reference_ms")),
        _speed_line("while profiling the table", result.get("table_reference_ms")),
        "worst archs:",
    ]
    for r in sorted(result["rows"], key=lambda r: -abs(r["error"]))[:worst]:
        lines.append(f"  arch {r['arch']:>3}: predicted {r['predicted_ms']:.3f} ms, measured {r['measured_ms']:.3f} ms "
                     f"({r['error']:+.2%})")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True, help="zoo model, e.g. mobilenet_v2")
    p.add_argument("--archs", type=int, default=100, help="random archs to measure (default 100)")
    p.add_argument("--lut", type=Path, default=None, help="table JSON (default: the cached host table)")
    p.add_argument("--json", type=Path, default=None, help="write the summary and per-arch rows here")
    p.add_argument("--resolution", type=int, default=None, help="input size (default: the model's)")
    p.add_argument("--threads", type=int, default=1, help="engine threads (default 1)")
    p.add_argument("--repeats", type=int, default=20, help="timed runs per arch (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs per arch (default 3)")
    p.add_argument("--rounds", type=int, default=3,
                   help="time every arch in this many rounds over all archs, keep the fastest round's median "
                        "(robust to load that drifts over minutes; default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the archs and inputs (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.archs < 1 or args.threads < 1 or args.repeats < 1 or args.warmup < 0 or args.rounds < 1:
        p.error("need --archs >= 1, --threads >= 1, --repeats >= 1, --warmup >= 0, --rounds >= 1")
    config = AccuracyConfig(**vars(args))
    from latency.lut import LatencyTableError

    try:
        result = run(config)
    except (LatencyTableError, ValueError) as e:
        print(f"latency_accuracy: error: {e}", file=sys.stderr)
        return 2
    print(report(result))
    if config.json:
        from latency.lut import atomic_write

        atomic_write(config.json, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
