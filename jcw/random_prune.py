"""Random channel pruning (seed 000/002): sample per-group widths near a MACs or latency target, rank, fine-tune."""

from __future__ import annotations

import argparse
import copy
import json
import math
import pickle
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from latency.lut import atomic_write

MAX_DRAWS_PER_SAMPLE = 2000


class RandomPruneError(Exception):
    """A user mistake or unusable input: the CLI prints the message and exits with status 2."""


class RandomSampler:
    """Uniform random genomes on the candidate grid, kept when their cost ratio is within T of the target.

    Channel genes take the grid values strictly inside (eta, 1) that the space allows (its lower
    bound may raise them; a gene whose bounds leave none of those takes its allowed values);
    density genes take every allowed grid value.  ``ratio`` maps genomes (N, G) to the cost ratio
    pruned / unpruned (MACs or predicted latency); a genome is kept when
    |ratio - target| <= tolerance (all are kept when ``target`` is None).
    """

    def __init__(self, space, eta: float, target: float | None = None, tolerance: float = 0.05,
                 ratio: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        if not 0.0 <= eta < 1.0:
            raise ValueError(f"eta must be in [0, 1), got {eta}")
        if target is not None and (ratio is None or tolerance <= 0):
            raise ValueError("a target needs a ratio function and a positive tolerance")
        self.space, self.eta, self.target, self.tolerance, self.ratio = space, eta, target, tolerance, ratio
        grid, nc = space.grid, space.n_channel_genes
        self.choices = []
        for j, (lo, hi) in enumerate(zip(space.lower, space.upper)):
            allowed = grid[(grid >= lo - 1e-9) & (grid <= hi + 1e-9)]
            inside = allowed[(allowed > eta + 1e-9) & (allowed < 1.0 - 1e-9)] if j < nc else allowed
            self.choices.append(inside if inside.size else allowed)

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, G) genomes, every gene uniform over its choices (no target check)."""
        return np.stack([c[rng.integers(len(c), size=n)] for c in self.choices], axis=1)

    def accepts(self, genes: np.ndarray) -> np.ndarray:
        """(N,) bool: the cost ratio is within the tolerance of the target."""
        if self.target is None:
            return np.ones(len(genes), dtype=bool)
        return np.abs(self.ratio(genes) - self.target) <= self.tolerance + 1e-12

    def nearest(self, n: int, rng: np.random.Generator, draws: int = 4096) -> np.ndarray:
        """n distinct genomes from ``draws`` draws: accepted ones first, then those whose ratio is closest to the target."""
        batch = np.unique(self.draw(draws, rng), axis=0)
        batch = batch[rng.permutation(len(batch))]
        if self.target is None:
            return batch[:n]
        gap = np.maximum(np.abs(self.ratio(batch) - self.target) - self.tolerance, 0.0)
        return batch[np.argsort(gap, kind="stable")[:n]]

    def sample(self, n: int, rng: np.random.Generator, unique: bool = True) -> np.ndarray:
        """n accepted genomes (distinct when ``unique``); raises ValueError when they cannot be found."""
        found: list[np.ndarray] = []
        seen: set[bytes] = set()
        draws, closest = 0, math.inf
        while len(found) < n and draws < MAX_DRAWS_PER_SAMPLE * n:
            batch = self.draw(1024, rng)
            draws += len(batch)
            ok = self.accepts(batch)
            if self.target is not None:
                closest = min(closest, float(np.abs(self.ratio(batch) - self.target).min()))
            for genes in batch[ok]:
                key = genes.tobytes()
                if unique and key in seen:
                    continue
                seen.add(key)
                found.append(genes)
                if len(found) == n:
                    break
        if len(found) < n:
            raise ValueError(
                f"found only {len(found)} of {n} {'distinct ' if unique else ''}archs with per-layer ratios in "
                f"({self.eta:g}, 1) and a cost ratio within {self.tolerance:g} of {self.target:g} after {draws} "
                f"draws (closest: {closest:.3f} away); lower --eta, raise --tolerance or ask for fewer --samples")
        return np.stack(found)


class RandomStrategy:
    """``--strategy random`` of ``jcw.search``: offspring drawn by the RandomSampler instead of SBX + mutation.

    Each generation scores the current population plus ``population`` fresh samples (channel
    ratios in (0, 1) and densities on the grid within the space's bounds, predicted latency in
    the survival's range) and keeps the survivors with the same uniform-target survival as
    NSGA-II, so both strategies spend the same evaluations per generation.  When few draws land
    in that range (a narrow one), the draws closest to it fill the generation.
    """

    def __init__(self, problem, config, latency_range: tuple[float, float]) -> None:
        from pymoo.core.evaluator import Evaluator
        from pymoo.core.population import Population

        from jcw.survival import UniformTargetSurvival

        low, high = latency_range
        full = float(problem.latency(problem.space.full())[0])
        self.sampler = RandomSampler(problem.space, 0.0, (low + high) / 2 / full, max((high - low) / 2 / full, 1e-9),
                                     lambda genes: problem.latency(genes) / full)
        self.problem, self.size = problem, config.population
        self.survival = UniformTargetSurvival(low, high)
        self.rng = np.random.default_rng(config.seed)
        self.pop = Population.new()
        self.evaluator = Evaluator(skip_already_evaluated=False)

    def step(self):
        """Scores the population plus fresh random samples and keeps ``population`` survivors; returns the scored set."""
        from pymoo.core.population import Population

        fresh = Population.new(X=self.sampler.nearest(self.size, self.rng))
        scored = Population.merge(self.pop, fresh) if len(self.pop) else fresh
        self.evaluator.eval(self.problem, scored)
        self.pop = self.survival.do(self.problem, scored, n_survive=self.size)
        return scored

    def population(self):
        return self.pop

    def state(self) -> bytes:
        """Population and RNG state."""
        return pickle.dumps({"pop": self.pop, "rng": self.rng.bit_generator.state})

    def restore(self, state: bytes) -> None:
        saved = pickle.loads(state)
        self.pop = saved["pop"]
        self.rng.bit_generator.state = saved["rng"]


@dataclass
class RandomPruneConfig:
    """Every knob of a random pruning run (the CLI flags have these names)."""

    model: str = "resnet20"
    data: str = "digits"
    weights: str | None = None
    criterion: str = "l1"
    flops_ratio: float | None = None
    budget_ms: float | None = None
    device: str | None = None
    threads: int | None = None
    lut: str | None = None
    eta: float | None = None
    tolerance: float = 0.05
    samples: int = 50
    top_k: int = 5
    topk_epochs: int = 1
    finetune_epochs: int = 5
    from_scratch: bool = False
    slimmable_epochs: int = 5
    pretrain_epochs: int = 12
    resolution: int | None = None
    batch_size: int = 64
    lr: float = 0.01
    recon_images: int = 256
    criterion_images: int = 128
    val_samples: int | None = None
    seed: int = 0
    sample_seed: int | None = None
    out: str | None = None
    quiet: bool = False
    command: str = ""

    @property
    def target_kind(self) -> str:
        return "latency" if self.budget_ms is not None else "macs"


def check_config(c: RandomPruneConfig) -> RandomPruneConfig:
    """Validates the config, filling the default target (MACs ratio 0.5) and eta (target - 0.05)."""
    from jcw.criteria import list_criteria
    from jcw.models import list_models

    if c.model not in list_models():
        raise RandomPruneError(f"unknown model {c.model!r}; accepted: {', '.join(list_models())}")
    if c.criterion not in list_criteria():
        raise RandomPruneError(f"unknown criterion {c.criterion!r}; accepted: {', '.join(list_criteria())}")
    if c.flops_ratio is not None and c.budget_ms is not None:
        raise RandomPruneError("give either --flops-ratio or --budget (with --device), not both")
    if c.budget_ms is not None and c.device is None:
        raise RandomPruneError("--budget needs --device (a53, a72, host or a table path)")
    if c.budget_ms is None and c.flops_ratio is None:
        c.flops_ratio = 0.5
    if c.flops_ratio is not None and not 0.0 < c.flops_ratio < 1.0:
        raise RandomPruneError(f"--flops-ratio must be in (0, 1), got {c.flops_ratio}")
    if c.eta is not None and not 0.0 <= c.eta < 1.0:
        raise RandomPruneError(f"--eta must be in [0, 1), got {c.eta}")
    if not c.tolerance > 0:
        raise RandomPruneError(f"--tolerance must be > 0, got {c.tolerance}")
    for name in ("samples", "top_k", "batch_size", "recon_images", "criterion_images"):
        if getattr(c, name) < 1:
            raise RandomPruneError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(c, name)}")
    for name in ("topk_epochs", "finetune_epochs", "slimmable_epochs", "pretrain_epochs"):
        if getattr(c, name) < 0:
            raise RandomPruneError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(c, name)}")
    if c.threads is not None and c.threads < 1:
        raise RandomPruneError(f"--threads must be >= 1, got {c.threads}")
    if c.from_scratch and c.weights is not None:
        raise RandomPruneError("--from-scratch trains a slimmable network from random weights: drop --weights")
    if not c.lr > 0:
        raise RandomPruneError(f"--lr must be > 0, got {c.lr}")
    return c


@dataclass
class _Setup:
    data: object
    model: torch.nn.Module
    spec: object
    space: object
    predictor: object | None
    table_kind: str | None
    full_macs: float
    full_params: float
    full_latency: float | None
    train_batches: list
    val_batches: list


def _fresh_model(name: str, num_classes: int, seed: int):
    """A zoo model whose initial weights come from ``seed`` (the global RNG state is restored afterwards)."""
    from jcw.models import create_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(name, num_classes)


def _prepare(c: RandomPruneConfig) -> _Setup:
    from jcw.data import DataError, load_dataset
    from jcw.layers import describe
    from jcw.models import default_resolution
    from jcw.space import Bounds, SearchSpace
    from jcw.training import ordered_batches, start_weights

    try:
        data = load_dataset(c.data, resolution=c.resolution, seed=c.seed)
    except DataError as e:
        raise RandomPruneError(str(e)) from None
    model = _fresh_model(c.model, data.num_classes, c.seed)
    spec = describe(model, data.resolution, name=c.model)
    no_bounds = Bounds(**{k: 0.0 for k in asdict(Bounds())})
    space = SearchSpace(spec, bounds=no_bounds, mode="channel")
    predictor, table_kind, full_latency = None, None, None
    if c.device is not None:
        from latency.devices import resolve_table
        from latency.lut import LatencyTable, LatencyTableError
        from latency.predictor import Predictor

        deploy = default_resolution(c.model)
        threads = c.threads or (1 if c.device == "host" else 4)
        try:
            table = LatencyTable.load(c.lut) if c.lut else resolve_table(c.device, c.model, threads, deploy)
            predictor = Predictor(table, spec.at_resolution(deploy))
        except (LatencyTableError, ValueError, KeyError, OSError) as e:
            raise RandomPruneError(str(e).strip("'\"")) from None
        table_kind = getattr(table, "kind", None)
        full_latency = float(predictor.predict(*space.decode_arrays(space.full()))[0])
        if c.budget_ms is not None and c.budget_ms >= full_latency:
            raise RandomPruneError(f"--budget {c.budget_ms:g} ms is not below the unpruned model's predicted "
                                   f"{full_latency:.2f} ms on {c.device}: nothing to prune")
    if not c.from_scratch:
        from jcw.checkpoint import CheckpointError
        try:
            start_weights(model, c.model, c.weights, spec.layers[-1].name, data, c.seed, c.pretrain_epochs,
                          c.batch_size, 0.05, quiet=c.quiet)
        except CheckpointError as e:
            raise RandomPruneError(str(e)) from None
    train_batches = ordered_batches(data.train, c.batch_size, limit=max(c.recon_images, c.criterion_images))
    val_batches = ordered_batches(data.val, 256, limit=c.val_samples)
    full = space.full()
    return _Setup(data, model.eval(), spec, space, predictor, table_kind, float(space.macs(full)[0]),
                  float(space.params(full)[0]), full_latency, train_batches, val_batches)


def _cost_ratio(s: _Setup, kind: str) -> Callable[[np.ndarray], np.ndarray]:
    if kind == "latency":
        return lambda genes: s.predictor.predict(*s.space.decode_arrays(genes)) / s.full_latency
    return lambda genes: s.space.macs(genes) / s.full_macs


def _describe_genes(s: _Setup, genes: np.ndarray) -> dict:
    macs, params = float(s.space.macs(genes)[0]), float(s.space.params(genes)[0])
    out = {"genes": [float(v) for v in genes], "macs": macs, "macs_ratio": macs / s.full_macs,
           "params": params, "params_ratio": params / s.full_params}
    if s.predictor is not None:
        latency = float(s.predictor.predict(*s.space.decode_arrays(genes))[0])
        out.update(latency_ms=latency, latency_ratio=latency / s.full_latency)
    return out


def _sample_seed(c: RandomPruneConfig) -> int:
    return c.seed if c.sample_seed is None else c.sample_seed


def _criterion_batches(s: _Setup, c: RandomPruneConfig) -> list:
    """The first ``criterion_images`` training images, in batches (for data-driven criteria, BN calibration)."""
    images, labels = (torch.cat(t)[: c.criterion_images] for t in zip(*s.train_batches))
    return [(images[i:i + c.batch_size], labels[i:i + c.batch_size]) for i in range(0, len(images), c.batch_size)]


def _images(batches: list, n: int) -> torch.Tensor:
    return torch.cat([x for x, _ in batches])[:n]


def _finetune(model, s: _Setup, c: RandomPruneConfig, epochs: int, seed: int, desc: str):
    from jcw.training import evaluate, train

    if epochs > 0:
        train(model, s.data.train, epochs, c.batch_size, c.lr, torch.Generator().manual_seed(seed), quiet=c.quiet,
              desc=desc)
    return evaluate(model, s.val_batches)


def _rank_pretrained(s: _Setup, c: RandomPruneConfig, genes: np.ndarray):
    """Order channels by the criterion, then per sample: prefix slice, reconstruct, evaluate."""
    from jcw.materialize import order_channels, slice_model
    from jcw.reconstruct import reconstruct
    from jcw.training import evaluate

    ordered = copy.deepcopy(s.model)
    order_channels(ordered, s.spec, c.criterion, batches=_criterion_batches(s, c),
                   generator=torch.Generator().manual_seed(c.seed))
    images = _images(s.train_batches, c.recon_images)

    def build(i: int):
        small = slice_model(ordered, s.spec, s.space.decode(genes[i]))
        reconstruct(ordered, small, s.spec, images, generator=torch.Generator().manual_seed(c.seed + i))
        return small

    scores = [evaluate(build(i), s.val_batches) for i in tqdm(range(len(genes)), desc="reconstruct + evaluate",
                                                                  disable=c.quiet, leave=False)]
    return scores, build


def _train_slimmable(s: _Setup, c: RandomPruneConfig, genes: np.ndarray, sampler: RandomSampler):
    """Slimmable network (seed 002): shared weights, each step the widest, the narrowest and two sampled widths."""
    from jcw.supernet import Supernet
    from jcw.training import RandomBatches, sgd

    narrow = np.array([ch[0] for ch in sampler.choices])
    candidates = np.concatenate([genes, s.space.full()[None], narrow[None]])
    supernet = Supernet(s.model, s.spec)
    out_ch, _, density = s.space.decode_arrays(candidates)
    supernet.set_candidates(out_ch, density)
    generator = torch.Generator().manual_seed(c.seed)
    batches = RandomBatches(s.data.train, c.batch_size, generator)
    steps = c.slimmable_epochs * math.ceil(len(s.data.train) / c.batch_size)
    optimizer = sgd(supernet.parameters(), 0.05)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
    n = len(genes)
    supernet.net.train()
    for _ in tqdm(range(steps), desc="slimmable", disable=c.quiet, leave=False):
        images, labels = batches()
        picks = [n, n + 1, *torch.randint(n, (2,), generator=generator).tolist()]
        optimizer.zero_grad(set_to_none=True)
        for i in picks:
            supernet.select(i)
            F.cross_entropy(supernet(images), labels).div(len(picks)).backward()
        optimizer.step()
        schedule.step()
    supernet.select(None)
    return supernet


def _rank_from_scratch(s: _Setup, c: RandomPruneConfig, genes: np.ndarray, sampler: RandomSampler):
    """Train the slimmable network, rank samples with it (BN recalibrated per sample), build from its weights."""
    from jcw.materialize import slice_model

    supernet = _train_slimmable(s, c, genes, sampler)
    calib = _criterion_batches(s, c)
    scores = []
    for i in tqdm(range(len(genes)), desc="evaluate", disable=c.quiet, leave=False):
        supernet.calibrate(i, calib)
        scores.append(supernet.measure(i, s.val_batches))
    shared = copy.deepcopy(s.model)
    shared.load_state_dict(supernet.net.state_dict())

    def build(i: int):
        return slice_model(shared, s.spec, s.space.decode(genes[i]))

    return scores, build


def run(c: RandomPruneConfig) -> dict:
    """The whole pipeline; writes result.json, samples.png and model.pt to ``c.out`` and returns the result."""
    from jcw.materialize import slice_model
    from jcw.training import atomic_torch_save, evaluate

    start = time.time()
    check_config(c)
    s = _prepare(c)
    target = c.budget_ms / s.full_latency if c.target_kind == "latency" else c.flops_ratio
    eta = c.eta if c.eta is not None else max(0.0, round(target - 0.05, 4))
    sampler = RandomSampler(s.space, eta, target, c.tolerance, _cost_ratio(s, c.target_kind))
    try:
        genes = sampler.sample(c.samples, np.random.default_rng(_sample_seed(c)))
    except ValueError as e:
        raise RandomPruneError(str(e)) from None
    out = Path(c.out or f"runs/random-{c.model}-{c.target_kind}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)

    full_loss, full_acc = evaluate(s.model, s.val_batches) if not c.from_scratch else (None, None)
    if c.from_scratch:
        scores, build = _rank_from_scratch(s, c, genes, sampler)
    else:
        scores, build = _rank_pretrained(s, c, genes)
    accs = np.array([a for _, a in scores])
    top = [int(i) for i in np.argsort(-accs, kind="stable")[: min(c.top_k, len(genes))]]
    tuned = {}
    for i in tqdm(top, desc=f"fine-tune top {len(top)}", disable=c.quiet, leave=False):
        model = build(i)
        tuned[i] = (model, _finetune(model, s, c, c.topk_epochs, _sample_seed(c) + 1000 + i, f"top-k {i}"))
    best = max(top, key=lambda i: (tuned[i][1][1], -tuned[i][1][0]))
    if c.from_scratch:
        fresh = _fresh_model(c.model, s.data.num_classes, c.seed + 1)
        final = slice_model(fresh, s.spec, s.space.decode(genes[best]))
    else:
        final = tuned[best][0]
    final_loss, final_acc = _finetune(final, s, c, c.finetune_epochs, _sample_seed(c) + 2000, "final")

    samples = []
    for i, g in enumerate(genes):
        row = {"index": i, **_describe_genes(s, g), "val_loss": scores[i][0], "val_acc": scores[i][1]}
        if i in tuned:
            row["topk_val_loss"], row["topk_val_acc"] = tuned[i][1]
        samples.append(row)
    result = {
        "method": "random channel pruning",
        "pipeline": "from_scratch" if c.from_scratch else "pretrained",
        "model": c.model, "data": s.data.name, "resolution": s.data.resolution,
        "criterion": None if c.from_scratch else c.criterion,
        "target": {"kind": c.target_kind, "ratio": target, "budget_ms": c.budget_ms, "device": c.device,
                   "threads": (c.threads or (1 if c.device == "host" else 4)) if c.device else None,
                   "table_kind": s.table_kind},
        "eta": eta, "tolerance": c.tolerance,
        "full": {"macs": s.full_macs, "params": s.full_params, "latency_ms": s.full_latency,
                 "val_loss": full_loss, "val_acc": full_acc},
        "best": {"index": best, "arch": s.space.decode(genes[best]).to_dict(), **_describe_genes(s, genes[best]),
                 "val_acc_before_finetune": scores[best][1], "val_acc_topk": tuned[best][1][1],
                 "val_loss_after_finetune": final_loss, "val_acc_after_finetune": final_acc},
        "top_k": top, "samples": samples,
        "config": {k: v for k, v in asdict(c).items() if k != "command"},
        "command": c.command, "seconds": round(time.time() - start, 1),
    }
    atomic_write(out / "result.json", json.dumps(result, indent=1) + "\n")
    plot_samples(result, out / "samples.png")
    atomic_torch_save({"arch": result["best"]["arch"], "state_dict": final.state_dict()}, out / "model.pt")
    result["out"] = str(out)
    return result


def plot_samples(result: dict, path: Path) -> None:
    """Samples' validation accuracy (before fine-tuning) against MACs; top-k and the pick marked (atomic write)."""
    import matplotlib.pyplot as plt

    from jcw.plot import save_figure

    samples = result["samples"]
    macs = np.array([r["macs"] for r in samples]) / 1e6
    acc = np.array([r["val_acc"] for r in samples]) * 100
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(macs, acc, s=14, alpha=0.6, label=f"{len(samples)} samples")
    top = result["top_k"]
    ax.scatter(macs[top], acc[top], s=40, facecolors="none", edgecolors="C1", label=f"top {len(top)}")
    b = result["best"]
    ax.scatter([b["macs"] / 1e6], [b["val_acc_after_finetune"] * 100], marker="*", s=160, c="C3",
               label="pick, fine-tuned")
    if result["full"]["val_acc"] is not None:
        ax.axhline(result["full"]["val_acc"] * 100, color="gray", ls="--", lw=1, label="unpruned")
    ax.set_xlabel("MACs (M)")
    ax.set_ylabel("val top-1 accuracy (%)")
    crit = result["criterion"] or "slimmable"
    ax.set_title(f"random pruning: {result['model']}, {crit}, target {result['target']['kind']} "
                 f"{result['target']['ratio']:.2f}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jcw.random_prune", description=__doc__)
    d = RandomPruneConfig()
    p.add_argument("--model", default=d.model, help=f"zoo model (default {d.model})")
    p.add_argument("--data", default=d.data, help="digits (default), cifar10:PATH, cifar100:PATH or an ImageFolder root")
    p.add_argument("--weights", help="full-model checkpoint (default: pretrain on --data, cached for digits)")
    p.add_argument("--criterion", default=d.criterion, help="channel order: l1 (default), l2, gm, taylor, es, kl, random")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--flops-ratio", type=float, help="target MACs ratio pruned/unpruned (default 0.5)")
    target.add_argument("--budget", help="target latency, e.g. 35ms (needs --device)")
    p.add_argument("--device", help="latency table: a53, a72, host or a table path")
    p.add_argument("--threads", type=int, help="threads of the device table (default 4 for a53/a72, 1 for host)")
    p.add_argument("--lut", help="latency table file to use instead of the device's")
    p.add_argument("--eta", type=float, help="per-layer width ratios are sampled in (eta, 1) (default target - 0.05)")
    p.add_argument("--tolerance", type=float, default=d.tolerance, help=f"T: |ratio - target| <= T (default {d.tolerance})")
    p.add_argument("--samples", type=int, default=d.samples, help=f"N sampled archs (default {d.samples})")
    p.add_argument("--top-k", type=int, default=d.top_k, help=f"archs fine-tuned briefly (default {d.top_k})")
    p.add_argument("--topk-epochs", type=int, default=d.topk_epochs, help=f"epochs per top-k arch (default {d.topk_epochs})")
    p.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs,
                   help=f"epochs for the picked arch (default {d.finetune_epochs}; from scratch: its re-training)")
    p.add_argument("--from-scratch", action="store_true", help="slimmable-network branch: no pretrained weights")
    p.add_argument("--slimmable-epochs", type=int, default=d.slimmable_epochs,
                   help=f"epochs of slimmable training with --from-scratch (default {d.slimmable_epochs})")
    p.add_argument("--pretrain-epochs", type=int, default=d.pretrain_epochs,
                   help=f"epochs of full-model pretraining without --weights (default {d.pretrain_epochs})")
    p.add_argument("--resolution", type=int, help="input size of the data (default: the dataset's)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"(default {d.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"fine-tuning learning rate (default {d.lr})")
    p.add_argument("--recon-images", type=int, default=d.recon_images,
                   help=f"training images for the least-squares reconstruction (default {d.recon_images})")
    p.add_argument("--criterion-images", type=int, default=d.criterion_images,
                   help=f"training images for data-driven criteria and BN calibration (default {d.criterion_images})")
    p.add_argument("--val-samples", type=int, help="validation images used (default: all)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"data split, pretraining and init seed (default {d.seed})")
    p.add_argument("--sample-seed", type=int, help="seed of the sampling and fine-tuning (default: --seed)")
    p.add_argument("--out", help="run directory (default runs/random-<model>-<target>-<time>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: parse flags -> RandomPruneConfig -> run()."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    values = {k: v for k, v in vars(args).items() if k != "budget"}
    try:
        if args.budget is not None:
            from jcw.search import SearchError, parse_budget
            try:
                values["budget_ms"] = parse_budget(args.budget)
            except SearchError as e:
                raise RandomPruneError(str(e)) from None
        config = RandomPruneConfig(**values, command=shlex.join(["python", "-m", "jcw.random_prune", *argv]))
        result = run(config)
    except RandomPruneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    b = result["best"]
    before = "n/a" if result["full"]["val_acc"] is None else f"{result['full']['val_acc']:.4f}"
    print(f"picked sample {b['index']}: MACs {b['macs'] / 1e6:.2f}M ({b['macs_ratio']:.1%}), params "
          f"{b['params'] / 1e3:.1f}k ({b['params_ratio']:.1%})"
          + (f", predicted {b['latency_ms']:.2f} ms" if "latency_ms" in b else ""))
    print(f"val accuracy: unpruned {before}, before fine-tuning {b['val_acc_before_finetune']:.4f}, "
          f"after fine-tuning {b['val_acc_after_finetune']:.4f}")
    print(f"wrote {result['out']}/result.json, samples.png, model.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
