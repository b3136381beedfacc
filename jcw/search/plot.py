"""Latency-accuracy plots of search runs: every candidate faded, the front bold, budget and references."""

from __future__ import annotations

import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from jcw.core.errors import UsageError  # noqa: E402
from jcw.core.util import atomic_write  # noqa: E402

MARKERS = {"unpruned": "*", "uniform 0.75x": "s", "uniform 0.5x": "D"}


def load_run(run_dir: Path) -> tuple[dict, dict]:
    """(front.json, history.json) of a run directory."""
    run_dir = Path(run_dir)
    try:
        front = json.loads((run_dir / "front.json").read_text())
        history = json.loads((run_dir / "history.json").read_text())
    except FileNotFoundError as e:
        raise UsageError(f"{run_dir} is not a finished search run: {Path(e.filename).name} is missing") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{run_dir}: {e}") from None
    return front, history


def _label(front: dict) -> str:
    budget = "no budget" if front.get("budget_ms") is None else f"{front['budget_ms']:g} ms"
    return f"{front['model']} {front['space']} {front['device']}x{front['threads']} {budget}"


def plot_runs(run_dirs, out: Path) -> Path:
    """Draws the runs in ``run_dirs`` (``draw_runs``) into ``out`` (PNG, atomic write)."""
    return save_figure(draw_runs([load_run(d) for d in run_dirs]), out)


def draw_runs(runs: list[tuple[dict, dict]]):
    """The figure of one or several runs, each given as (front.json, history.json) contents.

    Per run: every evaluated candidate (faded), the final front (bold line), the budget (vertical
    dashed line) and the reference models (unpruned, uniform 0.75x / 0.5x widths) scored by the
    same supernet.
    """
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    single = len(runs) == 1
    for k, (front, history) in enumerate(runs):
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
    first = runs[0][0]
    kind = first.get("table", {}).get("provenance", {}).get("kind", "?")
    ax.set_xlabel(f"predicted latency (ms, {kind} table)")
    ax.set_ylabel("validation accuracy (supernet estimate)")
    ax.set_title(_label(first) if single else "search fronts")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def save_figure(fig, path, dpi: int | None = None) -> Path:
    """Write a matplotlib figure as PNG atomically and close it."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return atomic_write(path, buffer.getvalue())
