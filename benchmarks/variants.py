"""Kernel variants side by side: the conv layers of benchmarks/kernels.py run by every kernel variant
this build offers on this CPU (e.g. avx512 / avx2 / sse2), alternating the variants inside one
process so that load from other processes hits them alike.

    python benchmarks/variants.py [--variants avx512,avx512:4x1,avx2] [--densities 1.0,0.2,0.1] [--rounds 5]
                                  [--repeats 10] [--depthwise] [--json PATH] [--label NAME]

A variant name with the suffix ":4x1" runs that variant with its dense register tile switched off
(kernels.set_dense_tile(False)): dense groups-1 layers then run on the 4x1-block tile, as before the
dense tile existed.

Per layer and variant: the median of `repeats` timed calls (Conv2d.benchmark, timed in C++), taken
`rounds` times; the table prints the minimum and the median of those per-round medians, in ms.
`--label` tags the rows (e.g. "portable" / "native" when comparing builds run one after the other).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys

import numpy as np

from jcw import kernels

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from kernels import DEPTHWISE_SHAPES, SHAPES, block_pruned_weight  # noqa: E402  (benchmarks/kernels.py)


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def layers(densities, depthwise, rng):
    for k, cin, cout, hw, stride, _ in SHAPES:
        for d in densities:
            w = block_pruned_weight(rng, cout, cin, k, d)
            yield f"{k}x{k} {cin}->{cout} @{hw} s{stride} d{d}", w, dict(stride=stride, padding=k // 2), (cin, hw)
    if depthwise:
        for c, hw, stride in DEPTHWISE_SHAPES:
            w = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
            yield f"dw3x3 {c} @{hw} s{stride}", w, dict(stride=stride, padding=1, groups=c), (c, hw)


def use(config: str) -> None:
    """Switch to a --variants entry: a variant name, ":4x1" = with its dense tile off."""
    kernels.set_kernel_variant(config.removesuffix(":4x1"))
    kernels.set_dense_tile(not config.endswith(":4x1"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", help="comma-separated subset of kernel_variants() (default: all but scalar)")
    p.add_argument("--densities", default="1.0,0.2,0.1")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--depthwise", action="store_true", help="also the depthwise 3x3 layers of mobilenet_v2")
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--label", default="", help="tag for the rows (e.g. the build)")
    a = p.parse_args(argv)
    offered = kernels.kernel_variants()
    variants = a.variants.split(",") if a.variants else [v for v in offered if v != "scalar"]
    bad = [v for v in variants if v.removesuffix(":4x1") not in offered]
    if bad or a.rounds < 1 or a.repeats < 1:
        p.error(f"variants must be among {offered} (optionally with :4x1)" if bad
                else "--rounds and --repeats must be >= 1")
    before = kernels.kernel_variant()
    rng = np.random.default_rng(0)
    densities = [float(x) for x in a.densities.split(",")]
    print(f"CPU: {cpu_name()}; build offers {','.join(offered)}; picked {before}; label {a.label or '-'}; "
          f"ms: min / median over {a.rounds} rounds of the median of {a.repeats} calls, 1 thread")
    head = f"{'layer':<34}" + "".join(f" {v + ' min':>12} {v + ' med':>12}" for v in variants)
    print(head + "\n" + "-" * len(head))
    rows = []
    try:
        for name, w, kw, (cin, hw) in layers(densities, a.depthwise, rng):
            conv = kernels.Conv2d(w, rng.standard_normal(w.shape[0]).astype(np.float32), act="relu", **kw)
            x = rng.standard_normal((cin, hw, hw)).astype(np.float32)
            ms = {v: [] for v in variants}
            for _ in range(a.rounds):
                for v in variants:
                    use(v)
                    ms[v].append(float(np.median(conv.benchmark(x, a.repeats, 2))))
            line = f"{name:<34}"
            for v in variants:
                use(v)
                line += f" {min(ms[v]):>12.3f} {float(np.median(ms[v])):>12.3f}"
                rows.append({"layer": name, "variant": v, "label": a.label, "kernel": conv.kernel_name(hw, hw),
                             "min_ms": min(ms[v]), "median_ms": float(np.median(ms[v]))})
            print(line, flush=True)
    finally:
        kernels.set_kernel_variant(before)
        kernels.set_dense_tile(True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"cpu": cpu_name(), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
