"""Hot vs cold caches: one engine conv timed with its weights and input still cached, and again
after the caches were overwritten (as inside a network, where every layer's weights are read once
per pass).  Shows how much of a layer's in-network time is waiting on memory.

    python benchmarks/cold_layers.py [--repeats N] [--flush-mib M] [--mode dense|auto] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from jcw import kernels
from jcw.core.util import atomic_write

# (in_ch, out_ch, hw) of 1x1 stride-1 convs from mobilenet_v1 / mobilenet_v2 at 224.
SHAPES = [(32, 64, 112), (128, 128, 56), (256, 512, 14), (512, 512, 14), (512, 1024, 7), (1024, 1024, 7),
          (320, 1280, 7)]


def measure(cin: int, cout: int, hw: int, repeats: int, flush: np.ndarray, mode: str, rng) -> tuple[float, float]:
    """(hot ms, cold ms): fastest of ``repeats`` single calls each, alternating hot and cold."""
    w = (rng.standard_normal((cout, cin, 1, 1)) * (2.0 / cin) ** 0.5).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    x = rng.standard_normal((1, cin, hw, hw)).astype(np.float32)
    conv = kernels.Conv2d(w, bias=b, act="relu", mode=mode)
    conv.run(x)
    hot, cold = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        conv.run(x)
        hot.append(time.perf_counter() - t0)
        flush += 1.0  # rewrite more than the last-level cache
        t0 = time.perf_counter()
        conv.run(x)
        cold.append(time.perf_counter() - t0)
    return min(hot) * 1e3, min(cold) * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/cold_layers.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=30, help="hot and cold calls per layer (default 30)")
    p.add_argument("--flush-mib", type=int, default=48, help="MiB rewritten before each cold call (default 48)")
    p.add_argument("--mode", choices=("dense", "auto"), default="dense", help="conv packing (default dense)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", dest="json_path", default=None, help="also write the rows here")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.flush_mib < 1:
        p.error("need --repeats >= 1 and --flush-mib >= 1")
    rng = np.random.default_rng(args.seed)
    flush = np.zeros(args.flush_mib * 2**20 // 4, np.float32)
    print(f"isa={kernels.isa()} 1 thread, fastest of {args.repeats} calls, {args.flush_mib} MiB rewritten before "
          f"each cold call")
    print(f"{'layer':<22} {'hot ms':>8} {'cold ms':>8} {'cold/hot':>8} {'cold GFLOP/s':>12}")
    rows = []
    for cin, cout, hw in SHAPES:
        hot, cold = measure(cin, cout, hw, args.repeats, flush, args.mode, rng)
        gflops = 2 * cin * cout * hw * hw / cold / 1e6
        label = f"1x1 {cin}->{cout} @{hw}"
        print(f"{label:<22} {hot:8.3f} {cold:8.3f} {cold / hot:7.2f}x {gflops:12.1f}")
        rows.append({"in_ch": cin, "out_ch": cout, "hw": hw, "hot_ms": hot, "cold_ms": cold})
    if args.json_path:
        atomic_write(args.json_path, json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
