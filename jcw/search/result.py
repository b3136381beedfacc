"""What a search returns: the final front as Candidates, the references, the history, and the files of a run."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from jcw.core.space import Arch
from jcw.core.util import write_json

HEADER_KEYS = ("model", "model_ref", "num_classes", "device", "threads", "resolution", "budget_ms",
               "table")  # best.json beside the candidate


@dataclass(frozen=True)
class Candidate:
    """One scored architecture: predicted latency, supernet-estimated loss and accuracy, kept MACs and params."""

    arch: Arch
    latency_ms: float
    val_loss: float
    val_acc: float
    macs: int
    params: int
    genes: tuple[float, ...] = ()
    name: str | None = None  # reference models only: "unpruned", "uniform 0.75x", ...

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def to_dict(self) -> dict:
        """The JSON record of front.json / best.json."""
        record = {"name": self.name} if self.name is not None else {}
        return {**record, "arch": self.arch.to_dict(), "genes": [round(float(v), 6) for v in self.genes],
                "latency_ms": self.latency_ms, "val_loss": self.val_loss, "val_acc": self.val_acc,
                "macs": self.macs, "flops": self.flops, "params": self.params}

    @classmethod
    def from_dict(cls, d: dict) -> "Candidate":
        return cls(Arch.from_dict(d["arch"]), float(d["latency_ms"]), float(d["val_loss"]), float(d["val_acc"]),
                   int(d["macs"]), int(d["params"]), tuple(float(v) for v in d.get("genes", ())), d.get("name"))


@dataclass
class SearchResult:
    """The outcome of ``jcw.search``: ``front`` (within the budget, fastest first), ``references`` (unpruned and
    uniform widths, scored by the same supernet), ``history`` (every candidate of every generation),
    ``hypervolume`` of the front, ``info`` (device, table provenance, seed, ...: the header of front.json),
    ``config`` (every option of the run) and ``model`` (the full model the supernet started from: trained
    and channel-ordered, so that ``jcw.materialize(result.model, arch)`` keeps the important channels)."""

    front: list[Candidate]
    references: list[Candidate]
    history: list[dict]
    hypervolume: float
    info: dict
    config: dict
    model: object = field(default=None, repr=False)

    @property
    def best(self) -> Candidate | None:
        """The most accurate candidate within the budget (the faster one on a tie), or None."""
        return max(self.front, key=lambda c: (c.val_acc, -c.latency_ms), default=None)

    @property
    def budget_ms(self) -> float | None:
        return self.info.get("budget_ms")

    def to_dict(self) -> dict:
        """The contents of front.json."""
        return {**self.info, "hypervolume": self.hypervolume,
                "references": [c.to_dict() for c in self.references], "candidates": [c.to_dict() for c in self.front]}

    def save(self, out) -> Path:
        """Writes what the CLI writes into ``out``: config.json, history.json, best.json (when a candidate met
        the budget), front.png and, last, front.json.  Returns ``out``."""
        from jcw.search.plot import draw_runs, save_figure

        out = Path(out)
        front = self.to_dict()
        write_json(out / "config.json", {**self.config, "world_size": self.info.get("world_size", 1)})
        write_json(out / "history.json", {"generations": self.history})
        if self.best is not None:
            write_json(out / "best.json", {**{k: self.info.get(k) for k in HEADER_KEYS}, **self.best.to_dict()})
        save_figure(draw_runs([(front, {"generations": self.history})]), out / "front.png")
        write_json(out / "front.json", front)
        return out

    @classmethod
    def load(cls, run_dir) -> "SearchResult":
        """A finished run directory (front.json, history.json, config.json) as a SearchResult (no model)."""
        from jcw.search.plot import load_run

        front, history = load_run(run_dir)
        config_path = Path(run_dir) / "config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        info = {k: v for k, v in front.items() if k not in ("hypervolume", "references", "candidates")}
        return cls([Candidate.from_dict(c) for c in front["candidates"]],
                   [Candidate.from_dict(c) for c in front.get("references", [])],
                   history["generations"], float(front.get("hypervolume", 0.0)), info, config)


def describe_provenance(table) -> str:
    """One line: which table, measured or modelled, on what, and how."""
    prov = table.provenance
    where = prov.get("device") or prov.get("cpu")
    engine = prov.get("engine") or (f"engine {prov['engine_version']}" if prov.get("engine_version") else None)
    details = ", ".join(str(x) for x in (where, prov.get("method"), engine) if x)
    return f"latency table: {table.device}, {table.threads} thread(s), {prov['kind']}" + (f" ({details})" if details else "")


def final_table(best: Candidate | None, unpruned: Candidate, table) -> str:
    """The closing table: chosen arch vs the unpruned model, and the latency table's provenance."""
    rows = [("predicted latency (ms)", "latency_ms", "{:.2f}", 1), ("supernet-estimated acc", "val_acc", "{:.4f}", 1),
            ("val loss", "val_loss", "{:.4f}", 1), ("MACs (M)", "macs", "{:.2f}", 1e-6), ("params (M)", "params", "{:.3f}", 1e-6)]
    lines = [f"{'':24}{'chosen':>12}{'unpruned':>12}"]
    for label, key, fmt, scale in rows:
        chosen = "-" if best is None else fmt.format(getattr(best, key) * scale)
        lines.append(f"{label:24}{chosen:>12}{fmt.format(getattr(unpruned, key) * scale):>12}")
    if best is None:
        lines.append("no candidate met the budget")
    lines.append(describe_provenance(table))
    return "\n".join(lines)
