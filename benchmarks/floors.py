"""Floors of the default search space: the fastest arch (every gene at its lower bound) against the
unpruned model, per zoo model, device and thread count, as a markdown table.

    python benchmarks/floors.py [--bounds default|jcw]
"""

from __future__ import annotations

import argparse
import sys

from jcw.cli.space import latency_range
from jcw.core.space import BOUNDS_PRESETS, SearchSpace
from latency.devicemodel import BOARDS, TABLE_MODELS, THREADS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bounds", choices=list(BOUNDS_PRESETS), default="default")
    args = parser.parse_args(argv)
    columns = [(d, t) for d in BOARDS for t in THREADS]
    print("| model | " + " | ".join(f"{d} x{t}: fastest / unpruned ms" for d, t in columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for model in TABLE_MODELS:
        space = SearchSpace.for_model(model, bounds=BOUNDS_PRESETS[args.bounds])
        cells = []
        for device, threads in columns:
            fastest, full = latency_range(space, device, threads)
            cells.append(f"{fastest:.2f} / {full:.2f} = {fastest / full:.1%}")
        print(f"| {model} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
