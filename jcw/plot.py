"""Latency-accuracy plots of search runs: every candidate faded, the front bold, budget and references."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MARKERS = {"unpruned": "*", "uniform 0.75x": "s", "uniform 0.5x": "D"}


class PlotError(Exception):
    """A run directory that cannot be plotted."""


def load_run(run_dir: Path, front: dict | None = None) -> tuple[dict, dict]:
    """(front.json, history.json) of a run directory; ``front`` given when not yet on disk."""
    run_dir = Path(run_dir)
    try:
        front = front if front is not None else json.loads((run_dir / "front.json").read_text())
        history = json.loads((run_dir / "history.json").read_text())
    except FileNotFoundError as e:
        raise PlotError(f"{run_dir} is not a finished search run: {Path(e.filename).name} is missing") from None
    except json.JSONDecodeError as e:
        raise PlotError(f"{run_dir}: {e}") from None
    return front, history


def _label(front: dict) -> str:
    budget = "no budget" if front.get("budget_ms") is None else f"{front['budget_ms']:g} ms"
    return f"{front['model']} {front['space']} {front['device']}x{front['threads']} {budget}"


def plot_runs(run_dirs, out: Path, pending: dict | None = None) -> Path:
    """Draws one or several runs into ``out`` (PNG, atomic write).

    Per run: every evaluated candidate (faded), the final front (bold line), the budget (vertical
    dashed line) and the reference models (unpruned, uniform 0.75x / 0.5x widths) scored by the
    same supernet.
    """
    pending = pending or {}
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    single = len(run_dirs) == 1
    for k, run_dir in enumerate(run_dirs):
        front, history = load_run(run_dir, pending.get(run_dir))
        color = colors[k % len(colors)]
        label = "final front" if single else _label(front)
        seen = [c for g in history["generations"] for c in g["candidates"]]
        ax.scatter([c["latency_ms"] for c in seen], [c["val_acc"] for c in seen], s=10, color=color, alpha=0.15,
                   linewidths=0, label="evaluated candidates" if single else None)
        cands = sorted(front["candidates"], key=lambda c: c["latency_ms"])
        ax.plot([c["latency_ms"] for c in cands], [c["val_acc"] for c in cands], "-o", color=color, lw=2.2, ms=6,
                label=label, zorder=3)
        for ref in front.get("references", []):
            ax.scatter(ref["latency_ms"], ref["val_acc"], marker=MARKERS.get(ref["name"], "^"), s=90,
                       facecolor="white" if not single else "black", edgecolor="black" if single else color,
                       zorder=4, label=ref["name"] if single or k == 0 else None)
            if single:
                ax.annotate(ref["name"], (ref["latency_ms"], ref["val_acc"]), textcoords="offset points",
                            xytext=(6, -12), fontsize=8)
        if front.get("budget_ms") is not None:
            ax.axvline(front["budget_ms"], color=color if not single else "tab:red", ls="--", lw=1.2,
                       label=f"budget {front['budget_ms']:g} ms" if single else None)
    first, _ = load_run(run_dirs[0], pending.get(run_dirs[0]))
    kind = first.get("table", {}).get("provenance", {}).get("kind", "?")
    ax.set_xlabel(f"predicted latency (ms, {kind} table)")
    ax.set_ylabel("validation accuracy (supernet estimate)")
    ax.set_title(_label(first) if single else "search fronts")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, out)


def save_figure(fig, path, dpi: int | None = None) -> Path:
    """Write a matplotlib figure as PNG atomically (temp file + os.replace) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=dpi)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jcw.plot", description="Overlay the fronts of search runs.")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="search run directories (holding front.json)")
    parser.add_argument("--out", metavar="FILE", help="PNG to write (default: RUN_DIR/front.png for one run, "
                                                      "fronts.png in the current directory for several)")
    args = parser.parse_args(argv)
    runs = [Path(r) for r in args.runs]
    out = Path(args.out) if args.out else (runs[0] / "front.png" if len(runs) == 1 else Path("fronts.png"))
    try:
        plot_runs(runs, out)
    except PlotError as e:
        print(f"python -m jcw.plot: error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
