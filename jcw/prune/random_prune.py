"""Random channel pruning (seed 000/002): sample per-group widths near a MACs or latency target, rank, fine-tune."""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from jcw.core.util import atomic_write
from jcw.core.errors import UsageError

MAX_DRAWS_PER_SAMPLE = 2000


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


@dataclass
class RandomPruneConfig:
    """Every knob of a random pruning run (the CLI flags have these names)."""

    model: str = "resnet20"  # a zoo name, path/to/file.py:factory or package.module:factory
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
    from jcw.prune.criteria import list_criteria
    from jcw.models import canonical_reference

    c.model = canonical_reference(c.model)  # a file path made absolute; the model itself is loaded by _prepare
    if c.criterion not in list_criteria():
        raise UsageError(f"unknown criterion {c.criterion!r}; accepted: {', '.join(list_criteria())}")
    if c.flops_ratio is not None and c.budget_ms is not None:
        raise UsageError("give either --flops-ratio or --budget (with --device), not both")
    if c.budget_ms is not None and c.device is None:
        raise UsageError("--budget needs --device (a53, a72, host or a table path)")
    if c.budget_ms is None and c.flops_ratio is None:
        c.flops_ratio = 0.5
    if c.flops_ratio is not None and not 0.0 < c.flops_ratio < 1.0:
        raise UsageError(f"--flops-ratio must be in (0, 1), got {c.flops_ratio}")
    if c.eta is not None and not 0.0 <= c.eta < 1.0:
        raise UsageError(f"--eta must be in [0, 1), got {c.eta}")
    if not c.tolerance > 0:
        raise UsageError(f"--tolerance must be > 0, got {c.tolerance}")
    for name in ("samples", "top_k", "batch_size", "recon_images", "criterion_images"):
        if getattr(c, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(c, name)}")
    for name in ("topk_epochs", "finetune_epochs", "slimmable_epochs", "pretrain_epochs"):
        if getattr(c, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(c, name)}")
    if c.threads is not None and c.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {c.threads}")
    if c.from_scratch and c.weights is not None:
        raise UsageError("--from-scratch trains a slimmable network from random weights: drop --weights")
    if not c.lr > 0:
        raise UsageError(f"--lr must be > 0, got {c.lr}")
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


def _fresh_model(ref: str, num_classes: int, seed: int):
    """The model ``ref`` names (``jcw.models.load_model``) with initial weights from ``seed`` (the global RNG
    state is restored afterwards)."""
    from jcw.models import load_model

    return load_model(ref, num_classes, seed=seed)


def _prepare(c: RandomPruneConfig) -> _Setup:
    from jcw.data import load_dataset
    from jcw.layers import describe
    from jcw.models import deploy_resolution, model_name, zoo_name
    from jcw.core.space import Bounds, SearchSpace
    from jcw.train.loops import ordered_batches, start_weights

    try:
        data = load_dataset(c.data, resolution=c.resolution, seed=c.seed)
    except UsageError as e:
        raise UsageError(str(e)) from None
    model = _fresh_model(c.model, data.num_classes, c.seed)
    zoo = zoo_name(model) is not None
    spec = describe(model, data.resolution, name=model_name(model))
    no_bounds = Bounds(**{k: 0.0 for k in asdict(Bounds())})
    space = SearchSpace(spec, bounds=no_bounds, mode="channel")
    predictor, table_kind, full_latency = None, None, None
    if c.device is not None:
        from latency.devices import resolve_table
        from latency.lut import LatencyTable
        from latency.predictor import Predictor

        deploy = deploy_resolution(model, None if zoo else c.resolution)  # outside the zoo: --resolution or 224
        threads = c.threads or (1 if c.device == "host" else 4)
        try:
            table = LatencyTable.load(c.lut) if c.lut else resolve_table(
                c.device, spec.model, threads, deploy, spec=None if zoo else spec.at_resolution(deploy))
            predictor = Predictor(table, spec.at_resolution(deploy))
        except (UsageError, ValueError, KeyError, OSError) as e:
            raise UsageError(str(e).strip("'\"")) from None
        table_kind = getattr(table, "kind", None)
        full_latency = float(predictor.predict(*space.decode_arrays(space.full()))[0])
        if c.budget_ms is not None and c.budget_ms >= full_latency:
            raise UsageError(f"--budget {c.budget_ms:g} ms is not below the unpruned model's predicted "
                                   f"{full_latency:.2f} ms on {c.device}: nothing to prune")
    if not c.from_scratch:
        try:
            start_weights(model, spec.model, c.weights, spec.layers[-1].name, data, c.seed, c.pretrain_epochs,
                          c.batch_size, 0.05, quiet=c.quiet, cache=None if zoo else False)
        except UsageError as e:
            raise UsageError(str(e)) from None
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
    from jcw.train.loops import evaluate, train

    if epochs > 0:
        train(model, s.data.train, epochs, c.batch_size, c.lr, torch.Generator().manual_seed(seed), quiet=c.quiet,
              desc=desc)
    return evaluate(model, s.val_batches)


def _rank_pretrained(s: _Setup, c: RandomPruneConfig, genes: np.ndarray):
    """Order channels by the criterion, then per sample: prefix slice, reconstruct, evaluate."""
    from jcw.prune.materialize import order_channels, slice_model
    from jcw.prune.reconstruct import reconstruct
    from jcw.train.loops import evaluate

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
    from jcw.search.supernet import Supernet
    from jcw.train.loops import RandomBatches, sgd

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
    from jcw.prune.materialize import slice_model

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
    from jcw.prune.materialize import slice_model
    from jcw.train.loops import atomic_torch_save, evaluate

    start = time.time()
    check_config(c)
    s = _prepare(c)
    target = c.budget_ms / s.full_latency if c.target_kind == "latency" else c.flops_ratio
    eta = c.eta if c.eta is not None else max(0.0, round(target - 0.05, 4))
    sampler = RandomSampler(s.space, eta, target, c.tolerance, _cost_ratio(s, c.target_kind))
    try:
        genes = sampler.sample(c.samples, np.random.default_rng(_sample_seed(c)))
    except ValueError as e:
        raise UsageError(str(e)) from None
    out = Path(c.out or f"runs/random-{s.spec.model}-{c.target_kind}-{time.strftime('%Y%m%d-%H%M%S')}")
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
        "model": s.spec.model, "model_ref": c.model, "data": s.data.name, "resolution": s.data.resolution,
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
    atomic_torch_save({"arch": result["best"]["arch"], "model_ref": c.model, "num_classes": s.data.num_classes,
                       "state_dict": final.state_dict()}, out / "model.pt")
    result["out"] = str(out)
    return result


def plot_samples(result: dict, path: Path) -> None:
    """Samples' validation accuracy (before fine-tuning) against MACs; top-k and the pick marked (atomic write)."""
    import matplotlib.pyplot as plt

    from jcw.search.plot import save_figure

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
