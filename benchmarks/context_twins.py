"""How faithful the profiler's context networks are: real pruned archs against their context twins.

For each of the first N seeded random archs of ``latency_accuracy.py`` (same seed, same draw), the
arch materialized from the zoo model and exported by torch is timed against its *context twin*:
the network ``latency.context`` builds from the NetSpec with the arch's widths and densities (what
``profile-latency`` times), and against the same twin with a ReLU after every layer and add (how
context networks were built before the spec recorded activations). The three engines run in
alternation in one process, so the machine's speed drifts hit all of them alike; the ratio of
their fastest rounds says how far the twin's time is from the real arch's.

    python benchmarks/context_twins.py --model mobilenet_v2 --archs 6
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np


def twin_run(spec, arch):
    """The latency.context Run with ``arch``'s kept channels per coupling group and density per layer."""
    from latency.context import Run

    channels = {x.group: c.out_ch for x, c in zip(spec.layers, arch.layers) if x.group >= 0}  # hidden fcs too
    return Run(channels, {i: c.density for i, c in enumerate(arch.layers)})


def relu_everywhere(spec):
    """``spec`` with a ReLU after every layer and add (context networks before LayerSpec.act)."""
    return replace(spec, layers=tuple(replace(x, act="relu") for x in spec.layers),
                   ops=tuple(replace(o, act="relu" if o.kind == "add" else "none") for o in spec.ops))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="zoo model (e.g. mobilenet_v2, resnet18)")
    p.add_argument("--archs", type=int, default=6, help="first N archs of latency_accuracy.py's draw (default 6)")
    p.add_argument("--rounds", type=int, default=15, help="alternating rounds (default 15)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per engine per round, median kept (default 5)")
    p.add_argument("--seed", type=int, default=0, help="the arch draw's seed (default 0, as latency_accuracy.py)")
    a = p.parse_args(argv)
    if a.archs < 1 or a.rounds < 1 or a.repeats < 1:
        p.error("need --archs >= 1, --rounds >= 1 and --repeats >= 1")

    import torch

    from jcw.engine import Engine
    from jcw.export import export_onnx
    from jcw.prune.materialize import materialize
    from jcw.models import create_model, default_resolution
    from jcw.core.space import SearchSpace
    from latency.context import build
    from latency_accuracy import random_genomes
    from models import calibrate_batchnorm

    try:
        space = SearchSpace.for_model(a.model, default_resolution(a.model))
    except (KeyError, ValueError) as e:
        p.error(str(e))
    spec = space.spec
    # The archs of latency_accuracy.py with this seed: its first genomes, materialized with the same
    # generator in the same order (the input image differs; it does not change the times).
    rng = np.random.default_rng(a.seed)
    genomes = random_genomes(space, a.archs, rng)
    x = rng.standard_normal((1, 3, spec.resolution, spec.resolution), dtype=np.float32)
    gen = torch.Generator().manual_seed(a.seed)
    base = create_model(a.model).eval()
    print(f"{a.model} @ {spec.resolution}: ms of the fastest of {a.rounds} alternating rounds (median of "
          f"{a.repeats} runs each)")
    print(f"{'arch':>4} {'real ms':>8} {'twin/real':>9} {'relu-everywhere twin/real':>26}")
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(a.archs):
            arch = space.decode(genomes[n])
            small, _ = materialize(base, arch, spec=spec, generator=gen)
            calibrate_batchnorm(small, spec.resolution, gen)
            engines = [Engine(str(export_onnx(small, Path(tmp) / f"arch{n}.onnx", spec.resolution)))]
            for s in (spec, relu_everywhere(spec)):
                engines.append(Engine(build(s, twin_run(spec, arch), np.random.default_rng([a.seed, n]))[0]))
            ms = np.zeros((a.rounds, len(engines)))
            for r in range(a.rounds):
                for j, e in enumerate(engines):
                    ms[r, j] = np.median(e.benchmark(x, repeats=a.repeats, warmup=1))
            best = ms.min(axis=0)
            ratios.append(best[1:] / best[0])
            print(f"{n:>4} {best[0]:>8.3f} {best[1] / best[0]:>9.3f} {best[2] / best[0]:>26.3f}", flush=True)
    lo, hi = np.min(ratios, axis=0), np.max(ratios, axis=0)
    print(f"range: twin/real {lo[0]:.3f}-{hi[0]:.3f}, relu-everywhere twin/real {lo[1]:.3f}-{hi[1]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
