"""Search quality: hypervolume of joint vs channel-only vs weight-only vs random search over seeds, and
supernet fidelity (Kendall tau against separately fine-tuned archs) for each supernet training rule.

    python benchmarks/search_quality.py [--models mobilenet_v2,resnet20] [--seeds 5] [--json PATH]

Per model (``MODELS``: device, threads, budget): one pretrained full model (shared by every run),
then for each seed four searches with the same evaluation budget and reference point: NSGA-II on
the joint, channel-only and weight-only spaces and the random strategy on the joint space. Fidelity:
12 archs spread over the latency range (the unpruned and uniform 0.75x / 0.5x models among them)
are scored by a supernet trained the way a search trains it (``--generations`` rebuilds of
``--supernet-steps`` steps), once per rule, and fine-tuned separately with one short schedule.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau

from jcw.prune.materialize import materialize
from jcw.search.problem import hypervolume
from jcw.core.util import parse_budget, write_json
from jcw.search.config import SearchConfig
from jcw.search.runner import UNIFORM_WIDTHS, prepare, run_search
from jcw.core.errors import UsageError
from jcw.search.supernet import RULES, Supernet, SupernetEstimator
from jcw.train.loops import RandomBatches, atomic_torch_save, evaluate, gather, ordered_batches, train

MODELS = {
    "mobilenet_v2": {"device": "a53", "threads": 4, "budget": "35ms"},
    "resnet20": {"device": "a53", "threads": 4, "budget": "7ms"},
}
STRATEGIES = {"joint": ("joint", "nsga2"), "channel": ("channel", "nsga2"), "weight": ("weight", "nsga2"),
              "random": ("joint", "random")}


def spread_archs(setup, n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """The reference models plus n - 3 archs whose predicted latencies spread evenly between the
    fastest arch and the unpruned model (nearest of many random draws, each at a random width)."""
    space = setup.space
    refs = [space.full()] + [space.uniform(w) for w in UNIFORM_WIDTHS]
    rng = np.random.default_rng(seed)
    draws = space.random(4000, rng)
    out_ch, in_ch, density = setup.latency_space.decode_arrays(draws)
    latency = setup.predictor.predict(out_ch, in_ch, density)
    targets = np.linspace(setup.latency_min, setup.latency_full, n - len(refs) + 2)[1:-1]
    picks = []
    for t in targets:
        order = np.argsort(np.abs(latency - t))
        picks.append(draws[next(i for i in order if not any(np.array_equal(draws[i], p) for p in picks))])
    names = ["unpruned"] + [f"uniform {w:g}x" for w in UNIFORM_WIDTHS] + [f"arch {k}" for k in range(len(picks))]
    return np.stack(refs + picks), names


def fidelity(config: SearchConfig, n_archs: int, epochs: int, lr: float, rules: list[str]) -> dict:
    """Kendall tau between each rule's supernet estimates of ``n_archs`` archs and their accuracy after
    fine-tuning each separately (materialized from the pretrained model, masks kept) for ``epochs``."""
    setup = prepare(config)
    genes, names = spread_archs(setup, n_archs, config.seed)
    out_ch, in_ch, density = setup.latency_space.decode_arrays(genes)
    latency = setup.predictor.predict(out_ch, in_ch, density)
    device = config.train_on
    calib_index = torch.randperm(len(setup.data.train), generator=torch.Generator().manual_seed(config.seed + 1))
    calib = [gather(setup.data.train, calib_index[: config.batch_size], device)]
    val_search = ordered_batches(setup.data.val, config.batch_size, config.val_samples, device)
    val_all = ordered_batches(setup.data.val, config.batch_size, None, device)
    rows = [{"name": name, "genes": [float(v) for v in g], "latency_ms": float(t), "macs": int(m)}
            for name, g, t, m in zip(names, genes, latency, setup.space.macs(genes))]
    estimates = {}
    for label, rule, steps, warmup in rules:
        supernet = Supernet(setup.model, setup.spec).to(device)
        generator = torch.Generator().manual_seed(config.seed)
        estimator = SupernetEstimator(supernet, setup.space, RandomBatches(setup.data.train, config.batch_size,
                                      generator, device), calib, val_search, steps, config.supernet_lr, generator,
                                      quiet=config.quiet, rule=rule, sampled=config.supernet_sampled)
        start = time.perf_counter()
        estimator.warm_up(warmup)
        for _ in range(config.generations):  # rebuilt and trained as often as a search rebuilds it
            loss, acc = estimator(genes)
        estimates[label] = {"loss": loss.tolist(), "acc": acc.tolist(), "seconds": time.perf_counter() - start}
    for k, row in enumerate(rows):
        small, masks = materialize(setup.model, setup.space.decode(genes[k]), config.criterion, spec=setup.spec)
        train(small, setup.data.train, epochs, config.batch_size, lr, torch.Generator().manual_seed(config.seed + 100 + k),
              device, config.quiet, desc=f"fine-tune {k + 1}/{len(rows)}", masks=masks)
        row["finetuned_loss"], row["finetuned_acc"] = evaluate(small, val_all)
    tuned_acc = [r["finetuned_acc"] for r in rows]
    tuned_loss = [r["finetuned_loss"] for r in rows]
    result = {"archs": rows, "rules": {}}
    for label, est in estimates.items():
        for row, lo, a in zip(rows, est["loss"], est["acc"]):
            row[f"supernet_acc[{label}]"], row[f"supernet_loss[{label}]"] = a, lo
        result["rules"][label] = {
            "kendall_tau": float(kendalltau(est["acc"], tuned_acc).statistic),
            "kendall_tau_loss": float(kendalltau(est["loss"], tuned_loss).statistic),
            "supernet_seconds": est["seconds"],
        }
    return result


def pretrained_weights(config: SearchConfig, out: Path) -> Path:
    """One pretrained full model per benchmark model (the search's pretraining), shared by every run."""
    path = out / f"pretrained-{config.model}.pt"
    if not path.is_file():
        setup = prepare(config)
        atomic_torch_save({k: v.cpu() for k, v in setup.model.state_dict().items()}, path)
    return path


def hypervolumes(base: SearchConfig, out: Path, seeds: list[int]) -> dict:
    """Per strategy the hypervolume of each seed's final front (same budget, evaluations and reference point)."""
    per_seed: dict = {name: [] for name in STRATEGIES}
    evaluations: dict = {}
    infeasible: dict = {}
    for seed in seeds:
        for name, (space, strategy) in STRATEGIES.items():
            run_dir = out / f"seed{seed}" / name
            config = dataclasses.replace(base, space=space, strategy=strategy, seed=seed, out=str(run_dir),
                                         resume=(run_dir / "config.json").exists())
            try:
                run_search(config)
            except UsageError as e:  # the space cannot reach the budget: no feasible front, hypervolume 0
                if "below the fastest arch" not in str(e):
                    raise
                per_seed[name].append(0.0)
                evaluations[name] = 0
                infeasible[name] = str(e)
                continue
            front = json.loads((run_dir / "front.json").read_text())
            F = np.array([[c["val_loss"], c["latency_ms"]] for c in front["candidates"]]).reshape(-1, 2)
            per_seed[name].append(hypervolume(F, tuple(front["hypervolume_reference"])))
            history = json.loads((run_dir / "history.json").read_text())["generations"]
            evaluations[name] = sum(len(g["candidates"]) for g in history)
            reference = front["hypervolume_reference"]
    hv = {k: np.asarray(v) for k, v in per_seed.items()}
    return {
        "hypervolume": {k: float(v.mean()) for k, v in hv.items()},
        "hypervolume_std": {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in hv.items()},
        "hypervolume_per_seed": {k: v.tolist() for k, v in hv.items()},
        "joint_wins": {k: int((hv["joint"] > v).sum()) for k, v in hv.items() if k != "joint"},
        "seeds": len(seeds),
        "evaluations": evaluations,
        "reference_point": reference,
        "infeasible": infeasible,
    }


def report(name: str, r: dict) -> str:
    lines = [f"{name}: {r['settings']}"]
    if "hypervolume" in r:
        lines.append(f"{'strategy':10}{'HV mean':>10}{'HV std':>9}{'joint wins':>12}{'evals':>7}")
    for s in STRATEGIES if "hypervolume" in r else ():
        wins = "-" if s == "joint" else f"{r['joint_wins'][s]}/{r['seeds']}"
        lines.append(f"{s:10}{r['hypervolume'][s]:>10.4f}{r['hypervolume_std'][s]:>9.4f}{wins:>12}"
                     f"{r['evaluations'][s]:>7}")
    for s, why in r.get("infeasible", {}).items():
        lines.append(f"{s}: no arch of its space meets the budget (hypervolume 0): {why.split(';')[0]}")
    lines.append(f"{'rule':22}{'tau(acc)':>9}{'tau(loss)':>10}{'supernet s':>11}")
    for label, f in r["fidelity"]["rules"].items():
        lines.append(f"{label:22}{f['kendall_tau']:>9.3f}{f['kendall_tau_loss']:>10.3f}{f['supernet_seconds']:>11.0f}")
    lines.append(f"{'arch':14}{'ms':>7}{'MMACs':>7}{'tuned acc':>10}" + "".join(f"{k[13:-1]:>16}" for k in r["fidelity"]["archs"][0]
                                                                       if k.startswith("supernet_acc[")))
    for a in r["fidelity"]["archs"]:
        lines.append(f"{a['name']:14}{a['latency_ms']:>7.2f}{a['macs'] / 1e6:>7.1f}{a['finetuned_acc']:>10.3f}" +
                     "".join(f"{v:>16.3f}" for k, v in a.items() if k.startswith("supernet_acc[")))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--seeds", type=int, default=5, help="search seeds per strategy (>= 1)")
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--supernet-steps", type=int, default=15)
    parser.add_argument("--warmup-steps", type=int, default=0, help="supernet warm-up steps of every search")
    parser.add_argument("--search-rule", default=SearchConfig.supernet_rule, help="supernet rule of the searches "
                        "(default: the search's default)")
    parser.add_argument("--archs", type=int, default=12, help="archs fine-tuned for the fidelity check (>= 12)")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument("--rules", default="sandwich,jcw,jcw*4", help="supernet rules compared for fidelity: "
                        "RULE[*K][+wN] (K times the steps per generation; N warm-up steps before the first)")
    parser.add_argument("--skip-hypervolume", action="store_true", help="fidelity only")
    parser.add_argument("--bounds", type=json.loads, default=None,
                        help='overrides of the search\'s default lower bounds, as JSON, e.g. \'{"channel": 0.3}\'')
    parser.add_argument("--out", default="runs/search_quality")
    parser.add_argument("--json", metavar="PATH", help="write the results here (default OUT/search_quality.json)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    models = args.models.split(",")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; accepted: {', '.join(MODELS)}")
    if args.archs < 12 or args.seeds < 1:
        parser.error("--archs must be at least 12 and --seeds at least 1")
    rules = []
    for item in args.rules.split(","):
        head, _, warmup = item.partition("+w")
        rule, _, times = head.partition("*")
        if rule not in RULES or (times and not times.isdigit()) or (warmup and not warmup.isdigit()):
            parser.error(f"--rules: {item!r}; accepted: RULE[*K][+wN] with RULE in {', '.join(RULES)}")
        rules.append((item, rule, args.supernet_steps * int(times or 1), int(warmup or 0)))
    out = Path(args.out)
    torch.set_num_threads(1)  # as the search does (SearchConfig.torch_threads): oversubscribed pools crawl
    results: dict = {"args": vars(args), "models": {}}
    try:
        for name in models:
            m = MODELS[name]
            base = SearchConfig(model=name, device=m["device"], threads=m["threads"], budget_ms=parse_budget(m["budget"]),
                                population=args.population, generations=args.generations,
                                supernet_steps=args.supernet_steps, supernet_warmup_steps=args.warmup_steps,
                                supernet_rule=args.search_rule,
                                bounds=args.bounds, seed=0, quiet=args.quiet)
            base = dataclasses.replace(base, weights=str(pretrained_weights(base, out / name)))
            r = {} if args.skip_hypervolume else hypervolumes(base, out / name, list(range(args.seeds)))
            r["settings"] = (f"{m['device']} x{m['threads']}, budget {m['budget']}, population {args.population} x "
                             f"{args.generations} generations, {args.supernet_steps} supernet steps "
                             f"({base.supernet_rule}, {base.supernet_sampled} sampled, {args.warmup_steps} warm-up), bounds: {args.bounds or 'search defaults'}")
            r["fidelity"] = fidelity(base, args.archs, args.finetune_epochs, args.finetune_lr, rules)
            r["kendall_tau"] = r["fidelity"]["rules"][rules[0][0]]["kendall_tau"]
            r["archs"] = r["fidelity"]["archs"]
            results["models"][name] = r
            write_json(Path(args.json) if args.json else out / "search_quality.json", results)
            print(report(name, r))
    except UsageError as e:
        print(f"search_quality: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
