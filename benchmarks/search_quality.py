"""Search quality: joint vs channel-only vs weight-only fronts (hypervolume) and supernet fidelity (Kendall tau)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau

from jcw.materialize import materialize
from jcw.problem import hypervolume
from jcw.search import SearchConfig, SearchError, prepare, run_search, write_json
from jcw.training import evaluate, ordered_batches, train

SPACES = ("joint", "channel", "weight")


def fidelity(config: SearchConfig, run_dir: Path, n_archs: int, epochs: int, lr: float) -> dict:
    """Kendall tau between the supernet's loss of ``n_archs`` candidates of the last generation and
    their loss after separately fine-tuning each (materialized from the pretrained model, masks kept)."""
    last = json.loads((run_dir / "history.json").read_text())["generations"][-1]["candidates"]
    last = sorted(last, key=lambda c: c["latency_ms"])
    picks = [last[i] for i in np.unique(np.linspace(0, len(last) - 1, n_archs).round().astype(int))]
    setup = prepare(dataclasses.replace(config, resume=False))
    val = ordered_batches(setup.data.val, config.batch_size, None, config.train_on)
    rows = []
    for k, cand in enumerate(picks):
        arch = setup.space.decode(np.asarray(cand["genes"]))
        small, masks = materialize(setup.model, arch, config.criterion, spec=setup.spec)
        generator = torch.Generator().manual_seed(config.seed + 100 + k)
        train(small, setup.data.train, epochs, config.batch_size, lr, generator, config.train_on, config.quiet,
              desc=f"fine-tune {k + 1}/{len(picks)}", masks=masks)
        loss, acc = evaluate(small, val)
        rows.append({"latency_ms": cand["latency_ms"], "supernet_loss": cand["val_loss"], "supernet_acc": cand["val_acc"],
                     "finetuned_loss": loss, "finetuned_acc": acc})
    tau = kendalltau([r["supernet_loss"] for r in rows], [r["finetuned_loss"] for r in rows])
    return {"archs": rows, "kendall_tau": float(tau.statistic), "p_value": float(tau.pvalue)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--device", default="a53")
    parser.add_argument("--budget", default="7ms")
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--supernet-steps", type=int, default=10)
    parser.add_argument("--train-resolution", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--archs", type=int, default=8, help="archs fine-tuned for the fidelity check (>= 8)")
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument("--out", default="runs/search_quality")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.archs < 8:
        parser.error("--archs must be at least 8")
    out = Path(args.out)
    results: dict = {"args": vars(args), "spaces": {}}
    try:
        from jcw.search import parse_budget
        base = SearchConfig(model=args.model, device=args.device, budget_ms=parse_budget(args.budget),
                            population=args.population, generations=args.generations,
                            supernet_steps=args.supernet_steps, train_resolution=args.train_resolution,
                            seed=args.seed, quiet=args.quiet)
        for space in SPACES:
            run_dir = out / space
            config = dataclasses.replace(base, space=space, out=str(run_dir), resume=(run_dir / "config.json").exists())
            run_search(config)
            front = json.loads((run_dir / "front.json").read_text())
            F = np.array([[c["val_loss"], c["latency_ms"]] for c in front["candidates"]]).reshape(-1, 2)
            results["spaces"][space] = {
                "hypervolume": hypervolume(F, tuple(front["hypervolume_reference"])),
                "front_size": len(F),
                "best_acc": max((c["val_acc"] for c in front["candidates"]), default=None),
                "evaluations": sum(len(g["candidates"]) for g in
                                   json.loads((run_dir / "history.json").read_text())["generations"]),
            }
        results["reference_point"] = front["hypervolume_reference"]
        results["fidelity"] = fidelity(dataclasses.replace(base, out=str(out / "joint")), out / "joint",
                                       args.archs, args.finetune_epochs, args.finetune_lr)
    except SearchError as e:
        print(f"search_quality: error: {e}", file=sys.stderr)
        return 2
    write_json(out / "search_quality.json", results)
    print(f"{'space':10}{'HV':>10}{'front':>7}{'best acc':>10}{'evals':>7}")
    for space, r in results["spaces"].items():
        print(f"{space:10}{r['hypervolume']:>10.4f}{r['front_size']:>7}{r['best_acc'] or 0:>10.3f}{r['evaluations']:>7}")
    print(f"reference point (loss, ms): {results['reference_point']}")
    fid = results["fidelity"]
    print(f"supernet fidelity: Kendall tau {fid['kendall_tau']:.3f} (p={fid['p_value']:.3f}) over {len(fid['archs'])} archs")
    hv = {s: r["hypervolume"] for s, r in results["spaces"].items()}
    print("joint >= channel-only and >= weight-only:", hv["joint"] >= hv["channel"] and hv["joint"] >= hv["weight"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
