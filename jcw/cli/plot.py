"""`jcw plot`: overlay the latency-accuracy fronts of search runs in one PNG."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jcw.core.errors import UsageError
from jcw.search.plot import plot_runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="jcw plot", description="Overlay the fronts of search runs.")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="search run directories (holding front.json)")
    parser.add_argument("--out", metavar="FILE", help="PNG to write (default: RUN_DIR/front.png for one run, "
                                                      "fronts.png in the current directory for several)")
    args = parser.parse_args(argv)
    runs = [Path(r) for r in args.runs]
    out = Path(args.out) if args.out else (runs[0] / "front.png" if len(runs) == 1 else Path("fronts.png"))
    try:
        plot_runs(runs, out)
    except UsageError as e:
        print(f"jcw plot: error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0

