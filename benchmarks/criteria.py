"""Benchmark the channel importance criteria under random pruning to 50% MACs (seed 000, Table 1) on the digits."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from jcw.prune.random_prune import RandomPruneConfig, run
from jcw.core.util import atomic_write

CRITERIA = ("l1", "l2", "gm", "taylor", "es", "kl")


@dataclass
class BenchConfig:
    """The benchmark's schedule (short by default: a few minutes per model on 2 cores)."""

    models: tuple[str, ...] = ("resnet20", "resnet56")
    resolution: int = 32
    samples: int = 6
    top_k: int = 2
    topk_epochs: int = 1
    finetune_epochs: int = 2
    pretrain_epochs: int = 3
    recon_images: int = 128
    criterion_images: int = 16
    tolerance: float = 0.05
    extra_seeds: tuple[int, ...] = (1, 2)
    out: str | None = None
    quiet: bool = False


def _row(result: dict) -> dict:
    b = result["best"]
    return {"top1_err": 100 * (1 - b["val_acc_after_finetune"]), "macs": b["macs"], "macs_ratio": b["macs_ratio"],
            "params": b["params"], "params_ratio": b["params_ratio"], "before_finetune_err": 100 * (1 - b["val_acc_before_finetune"]),
            "sample_val_acc": [s["val_acc"] for s in result["samples"]]}


def benchmark(c: BenchConfig) -> dict:
    """Runs every criterion (same samples, same fine-tuning) and l1 with other sampling seeds, per model."""
    root = Path(c.out or tempfile.mkdtemp(prefix="jcw-criteria-"))
    report = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in c.__dict__.items()}, "models": {}}
    for model in c.models:
        base = RandomPruneConfig(model=model, resolution=c.resolution, flops_ratio=0.5, tolerance=c.tolerance,
                                 samples=c.samples, top_k=c.top_k, topk_epochs=c.topk_epochs,
                                 finetune_epochs=c.finetune_epochs, pretrain_epochs=c.pretrain_epochs,
                                 recon_images=c.recon_images, criterion_images=c.criterion_images, quiet=c.quiet)
        rows, baseline = {}, None
        for criterion in CRITERIA:
            start = time.time()
            result = run(replace(base, criterion=criterion, out=str(root / model / criterion)))
            rows[criterion] = {**_row(result), "seconds": round(time.time() - start, 1)}
            baseline = result["full"]
            print(f"{model} {criterion}: {rows[criterion]['top1_err']:.2f}% ({rows[criterion]['seconds']} s)", file=sys.stderr)
        seeds = {0: rows["l1"]}
        for seed in c.extra_seeds:
            result = run(replace(base, criterion="l1", sample_seed=seed, out=str(root / model / f"l1-seed{seed}")))
            seeds[seed] = _row(result)
        crit_err = [r["top1_err"] for r in rows.values()]
        seed_err = [r["top1_err"] for r in seeds.values()]
        report["models"][model] = {
            "baseline": {"top1_err": 100 * (1 - baseline["val_acc"]), "macs": baseline["macs"], "params": baseline["params"]},
            "criteria": rows, "l1_seeds": {str(k): v for k, v in seeds.items()},
            "spread_criteria": {"range": max(crit_err) - min(crit_err), "stdev": statistics.pstdev(crit_err)},
            "spread_seeds": {"range": max(seed_err) - min(seed_err), "stdev": statistics.pstdev(seed_err)},
        }
    return report


def table(report: dict) -> str:
    """Markdown table in the form of seed 000's Table 1, plus the spreads."""
    lines = ["| Criterion | Top-1 Error (%) | MACs [M] / Ratio (%) | Params [k] / Ratio (%) | Error before fine-tuning (%) |",
             "|---|---|---|---|---|"]
    for model, m in report["models"].items():
        b = m["baseline"]
        lines.append(f"| **{model}, digits {report['config']['resolution']}px** | | | | |")
        lines.append(f"| Baseline | {b['top1_err']:.2f} | {b['macs'] / 1e6:.2f} / 100.00 | {b['params'] / 1e3:.1f} / 100.00 | |")
        for name, r in m["criteria"].items():
            lines.append(f"| {name.upper() if name != 'taylor' else 'TE'} | {r['top1_err']:.2f} | {r['macs'] / 1e6:.2f} / "
                         f"{100 * r['macs_ratio']:.2f} | {r['params'] / 1e3:.1f} / {100 * r['params_ratio']:.2f} | "
                         f"{r['before_finetune_err']:.2f} |")
        seeds = ", ".join(f"{v['top1_err']:.2f}" for v in m["l1_seeds"].values())
        lines.append(f"| spread across criteria | range {m['spread_criteria']['range']:.2f}, "
                     f"std {m['spread_criteria']['stdev']:.2f} | | | |")
        lines.append(f"| spread across sampling seeds (L1: {seeds}) | range {m['spread_seeds']['range']:.2f}, "
                     f"std {m['spread_seeds']['stdev']:.2f} | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/criteria.py", description=__doc__)
    p.add_argument("--json", help="also write the report as JSON to this path")
    p.add_argument("--models", nargs="+", default=list(BenchConfig.models), help="(default resnet20 resnet56)")
    p.add_argument("--resolution", type=int, default=BenchConfig.resolution, help="input size (default 32)")
    p.add_argument("--samples", type=int, default=BenchConfig.samples)
    p.add_argument("--pretrain-epochs", type=int, default=BenchConfig.pretrain_epochs)
    p.add_argument("--finetune-epochs", type=int, default=BenchConfig.finetune_epochs)
    p.add_argument("--top-k", type=int, default=BenchConfig.top_k)
    p.add_argument("--topk-epochs", type=int, default=BenchConfig.topk_epochs)
    p.add_argument("--extra-seeds", type=int, nargs="*", default=list(BenchConfig.extra_seeds),
                   help="sampling seeds besides 0 for the L1 seed spread (default 1 2)")
    p.add_argument("--out", help="directory for the runs (default: a temporary directory)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    report = benchmark(BenchConfig(models=tuple(args.models), resolution=args.resolution, samples=args.samples,
                                   pretrain_epochs=args.pretrain_epochs, finetune_epochs=args.finetune_epochs,
                                   top_k=args.top_k, topk_epochs=args.topk_epochs, extra_seeds=tuple(args.extra_seeds),
                                   out=args.out, quiet=args.quiet))
    print(table(report))
    if args.json:
        atomic_write(args.json, json.dumps({**report, "table": table(report)}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
