"""Latency prediction accuracy: random joint-pruned archs, materialized, exported, timed on the engine.

Errors are reported twice. **Raw**: predicted / measured - 1, the arch's fastest round as timed.
**Normalised**: the same, with every measurement brought to the machine speed the table was
normalised to, the way profile-latency does it (latency.profile.normalise). The full-width
network of the model (the profiler's reference network, latency.profile.reference_timer: the
fastest of --repeats runs, same threads and warm-up as the archs) is timed before every arch and
after the last one in every round: ref, arch 0, ref, arch 1, ..., ref. An arch's round is scaled
by ``target / min(ref before, ref after)`` (like the profiler, the faster of the two timings
around it: one caught spike is not taken for the machine's speed), where ``target`` is the
table's reference time: the median of the reference timings the profiler took (provenance
``reference_ms``), i.e. the speed the table was scaled to. A table without reference timings
(modelled, or profiled before they were recorded) uses its own prediction of the full-width
network instead, and the report says so. The normalised measurement of an arch is the median of
its normalised rounds (the profiler's per-point statistic: once the speed is taken out the
rounds measure the same thing, and the median does not turn the ratio's noise into a downward
bias as the fastest round would). A slow spell that slows an arch and the reference next to it
alike cancels; a real bias of the table does not, and the raw mean error stays printed beside.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from jcw.core.errors import UsageError


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


def normalise(round_ms: np.ndarray, reference_ms: np.ndarray, target_ms: float) -> np.ndarray:
    """Arch times of every round scaled to the speed ``target_ms`` of the reference network.

    ``round_ms`` (R, N): arch n's time in round r; ``reference_ms`` (R, N + 1): the reference
    network timed before each arch of a round and after its last (``[r, n]`` before arch n,
    ``[r, n + 1]`` after it). Returns (R, N): ``round_ms * target_ms / min(before, after)``.
    """
    round_ms, reference_ms = np.asarray(round_ms, float), np.asarray(reference_ms, float)
    if round_ms.ndim != 2 or reference_ms.shape != (round_ms.shape[0], round_ms.shape[1] + 1):
        raise ValueError(f"need round_ms (R, N) and reference_ms (R, N + 1), got {round_ms.shape} and "
                         f"{reference_ms.shape}")
    if not target_ms > 0 or np.any(reference_ms <= 0):
        raise ValueError("reference times must be positive")
    return round_ms * (target_ms / np.minimum(reference_ms[:, :-1], reference_ms[:, 1:]))


def normalised_measured(round_ms: np.ndarray, reference_ms: np.ndarray, target_ms: float) -> np.ndarray:
    """(N,) per arch: the median over rounds of its normalised times (see normalise)."""
    return np.median(normalise(round_ms, reference_ms, target_ms), axis=0)


def table_reference(table, predictor, space, tag: str) -> tuple[float, str]:
    """(ms, source) of the speed the table is normalised to: the median of the profiler's reference
    timings of ``tag`` (its ``typical``), else the table's own prediction of the full-width network."""
    timings = (table.provenance.get("reference_ms") or {}).get(tag)
    if timings:
        return float(np.median(timings)), f"median of the table's {len(timings)} reference timings"
    full = float(predictor.predict(*space.decode_arrays(space.full()[None]))[0])
    return full, "the table records no reference timings: its own prediction of the full-width network"


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

    Measured = the lowest of ``rounds`` medians, each round timing every arch once in turn, the
    full-width reference network before every arch and after the last (the normalised errors, see
    the module docstring).  Every materialized arch gets its BatchNorm statistics re-estimated on
    random images (as fine-tuning would); a randomly initialised pruned net otherwise decays into
    float denormals, which are slow.
    """
    import torch
    from tqdm import tqdm

    from jcw.engine import ENGINE_VERSION, Engine
    from jcw.export import export_onnx
    from jcw.prune.materialize import materialize
    from jcw.models import create_model
    from jcw.core.space import SearchSpace
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
        # The full-width network the profiler times between its runs, timed next to every arch
        # (ref, arch 0, ref, arch 1, ..., ref in each round): the machine's speed at that moment.
        reference = reference_timer(spec, config.threads, config.repeats, config.warmup, config.seed)
        refs = np.zeros((config.rounds, config.archs + 1))
        fastest = np.zeros((config.rounds, config.archs))  # diagnostic: each round's fastest run
        load = [os.getloadavg()[0]]
        for r in tqdm(range(config.rounds * config.archs), disable=config.quiet, desc=f"{config.model} timing"):
            i, n = divmod(r, config.archs)
            refs[i, n] = reference()
            engine = Engine(paths[n], threads=config.threads)
            ms = engine.benchmark(x, repeats=config.repeats, warmup=config.warmup)
            rounds[i, n], fastest[i, n] = np.median(ms), np.min(ms)
            if n == config.archs - 1:
                refs[i, n + 1] = reference()
        load.append(os.getloadavg()[0])
    tag = f"{config.model}@{spec.resolution}"
    target, target_source = table_reference(table, predictor, space, tag)
    full_predicted = float(predictor.predict(*space.decode_arrays(space.full()[None]))[0])
    scaled = normalise(rounds, refs, target)
    measured = rounds.min(axis=0)
    normalised = normalised_measured(rounds, refs, target)
    rows = [{"arch": n, "predicted_ms": float(predicted[n]), "measured_ms": float(measured[n]),
             "error": float(predicted[n] / measured[n] - 1), "round_ms": rounds[:, n].tolist(),
             "round_fastest_ms": fastest[:, n].tolist(), "reference_ms": np.minimum(refs[:, n], refs[:, n + 1]).tolist(),
             "normalised_ms": float(normalised[n]), "normalised_error": float(predicted[n] / normalised[n] - 1),
             "normalised_round_ms": scaled[:, n].tolist(),
             "genes": genomes[n].tolist()} for n in range(config.archs)]
    result = summarize(predicted, measured)
    result["normalised"] = summarize(predicted, normalised) | {
        "target_ms": target, "target": target_source,
        "method": "round_ms * target_ms / min(reference before, reference after); median over rounds"}
    result.update(model=config.model, resolution=spec.resolution, threads=config.threads, archs=config.archs,
                  engine_version=ENGINE_VERSION, predictor_archs_per_s=throughput(predictor, space, rng),
                  seed=config.seed, table=str(config.lut) if config.lut else "host (cached)",
                  reference_ms=refs.ravel().tolist(), full_width_predicted_ms=full_predicted,
                  load_average=load,
                  table_reference_ms=(table.provenance.get("reference_ms") or {}).get(tag),
                  table_provenance=table.provenance, rows=rows)
    return result


def _speed_line(when: str, ms) -> str:
    """The full-width reference network's times: the machine's speed at that moment."""
    if not ms:
        return f"full-width network {when}: not recorded"
    return (f"full-width network {when}: {min(ms):.2f} / {float(np.median(ms)):.2f} / {max(ms):.2f} ms "
            f"(min / median / max of {len(ms)})")


def _errors(label: str, e: dict) -> str:
    return (f"{label:<10} median |error| {e['median_abs_err']:.2%}   p95 |error| {e['p95_abs_err']:.2%}   "
            f"within +-5% {e['within_5']:.0%}   within +-10% {e['within_10']:.0%}   "
            f"RMSPE {e['rmspe']:.2%}   mean error {e['mean_err']:+.2%}")


def report(result: dict, worst: int = 5) -> str:
    """Human-readable summary (raw and normalised errors) and the worst archs."""
    norm = result.get("normalised")
    lines = [
        f"{result['model']} @ {result['resolution']}, {result['threads']} thread(s), {result['archs']} random archs "
        f"(seed {result['seed']}), table: {result['table']}",
        _errors("raw", result),
    ]
    if norm:
        lines.append(_errors("normalised", norm))
        lines.append(f"normalised to {norm['target_ms']:.2f} ms ({norm['target']}); the table predicts the "
                     f"full-width network at {result['full_width_predicted_ms']:.2f} ms")
    lines += [
        f"predictor: {result['predictor_archs_per_s']:,.0f} archs/s",
        _speed_line("while measuring", result.get("reference_ms")),
        _speed_line("while profiling the table", result.get("table_reference_ms")),
    ]
    if result.get("load_average"):
        lines.append(f"load average (1 min) before / after timing: {result['load_average'][0]:.2f} / "
                     f"{result['load_average'][-1]:.2f} on {os.cpu_count()} CPUs")
    lines.append("worst archs (raw):")
    for r in sorted(result["rows"], key=lambda r: -abs(r["error"]))[:worst]:
        lines.append(f"  arch {r['arch']:>3}: predicted {r['predicted_ms']:.3f} ms, measured {r['measured_ms']:.3f} ms "
                     f"({r['error']:+.2%})" + (f", normalised {r['normalised_ms']:.3f} ms ({r['normalised_error']:+.2%})"
                                               if "normalised_ms" in r else ""))
    if norm:
        lines.append("worst archs (normalised):")
        for r in sorted(result["rows"], key=lambda r: -abs(r["normalised_error"]))[:worst]:
            lines.append(f"  arch {r['arch']:>3}: predicted {r['predicted_ms']:.3f} ms, normalised "
                         f"{r['normalised_ms']:.3f} ms ({r['normalised_error']:+.2%}), rounds "
                         + " ".join(f"{v:.2f}" for v in r["round_ms"]) + " ms, reference "
                         + " ".join(f"{v:.2f}" for v in r["reference_ms"]) + " ms")
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
                        "(raw) and the median of the rounds normalised by the full-width network timed next to "
                        "the arch (normalised; robust to load that drifts over minutes; default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the archs and inputs (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.archs < 1 or args.threads < 1 or args.repeats < 1 or args.warmup < 0 or args.rounds < 1:
        p.error("need --archs >= 1, --threads >= 1, --repeats >= 1, --warmup >= 0, --rounds >= 1")
    config = AccuracyConfig(**vars(args))

    try:
        result = run(config)
    except (UsageError, ValueError) as e:
        print(f"latency_accuracy: error: {e}", file=sys.stderr)
        return 2
    print(report(result))
    if config.json:
        from jcw.core.util import atomic_write

        atomic_write(config.json, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
