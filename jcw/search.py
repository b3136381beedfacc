"""Latency-aware joint channel + weight pruning search: config, strategies, run loop and CLI."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pickle
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from pymoo.core.evaluator import Evaluator
from pymoo.core.population import Population
from pymoo.algorithms.moo.nsga2 import NSGA2
from tqdm.auto import tqdm

from jcw import operators
from jcw.distributed import DistContext, init_distributed, shutdown
from jcw.problem import JointPruningProblem, hypervolume, non_dominated
from jcw.random_prune import RandomStrategy
from jcw.space import BOUNDS_PRESETS, Bounds
from jcw.supernet import RULES
from jcw.survival import UniformTargetSurvival
from latency.lut import atomic_write

PRESETS = {
    "quick": {"population": 8, "generations": 6, "supernet_steps": 40, "pretrain_epochs": 8},
    "paper": {"population": 64, "generations": 128, "supernet_epochs": 30.0, "batch_size": 256},
}
UNIFORM_WIDTHS = (0.75, 0.5)
REFERENCE_NAMES = ("unpruned",) + tuple(f"uniform {w:g}x" for w in UNIFORM_WIDTHS)
_BUDGET = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s)?\s*$")


class SearchError(Exception):
    """A user mistake or unusable input: the CLI prints the message and exits with status 2."""


def parse_budget(text) -> float:
    """Latency budget in ms from ``35ms``, ``35 ms``, ``0.035s`` or a bare number (ms)."""
    match = _BUDGET.match(str(text))
    if not match:
        raise SearchError(f"budget {text!r} is not a latency; use e.g. 35ms, '35 ms', 0.035s or 35 (ms)")
    value = float(match.group(1)) * (1000.0 if match.group(2) == "s" else 1.0)
    if not math.isfinite(value) or value <= 0:
        raise SearchError(f"budget {text!r} must be a positive latency, e.g. 35ms")
    return value


@dataclass
class SearchConfig:
    """Every knob of a search run (CLI flags and --config YAML keys have these names)."""

    model: str = "mobilenet_v2"
    device: str = "a53"
    lut: str | None = None
    budget_ms: float | None = None
    data: str = "digits"
    weights: str | None = None
    criterion: str = "l1"
    space: str = "joint"
    strategy: str = "nsga2"
    threads: int | None = None
    preset: str = "quick"
    population: int = 8
    generations: int = 4
    supernet_steps: int = 10
    supernet_epochs: float | None = None
    supernet_lr: float = 0.01
    supernet_rule: str = "sandwich"
    supernet_sampled: int = 2
    supernet_warmup_steps: int = 0
    batch_size: int = 64
    calib_batches: int = 1
    val_samples: int | None = 256
    pretrain_epochs: int = 3
    pretrain_lr: float = 0.05
    bounds: str | dict | None = None  # a BOUNDS_PRESETS name, or (YAML) overrides of the default, e.g. {channel: 0.3}
    resolution: int | None = None
    train_resolution: int | None = None
    train_on: str = "cpu"
    torch_threads: int | None = 1
    seed: int = 0
    out: str | None = None
    resume: bool = False
    quiet: bool = False
    command: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CONFIG_FIELDS = {f.name for f in dataclasses.fields(SearchConfig)}


def build_config(cli: dict, config_file: str | None = None) -> SearchConfig:
    """Defaults <- preset <- YAML file <- explicit CLI values (None means "not given")."""
    from_file: dict = {}
    if config_file is not None:
        try:
            from_file = yaml.safe_load(Path(config_file).read_text()) or {}
        except OSError as e:
            raise SearchError(f"cannot read config file {config_file}: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            raise SearchError(f"config file {config_file} is not valid YAML: {e}") from None
        if not isinstance(from_file, dict):
            raise SearchError(f"config file {config_file} must be a mapping of option: value")
        from_file = {str(k).replace("-", "_"): v for k, v in from_file.items()}
        if "budget" in from_file:
            from_file["budget_ms"] = from_file.pop("budget")
        unknown = sorted(set(from_file) - CONFIG_FIELDS)
        if unknown:
            raise SearchError(f"config file {config_file}: unknown option(s) {', '.join(unknown)}; "
                              f"accepted: {', '.join(sorted(CONFIG_FIELDS - {'command'}))}")
    given = {k: v for k, v in cli.items() if v is not None}
    preset = given.get("preset", from_file.get("preset", "quick"))
    if preset not in PRESETS:
        raise SearchError(f"unknown preset {preset!r}; accepted: {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **from_file, **given}
    if values.get("budget_ms") is not None:
        values["budget_ms"] = parse_budget(values["budget_ms"])
    config = SearchConfig(**values)
    _check_config(config)
    return config


def search_bounds(c: SearchConfig) -> Bounds:
    """The gene lower bounds of a run: a preset name (``BOUNDS_PRESETS``: default, jcw), or a mapping
    of rule overrides of the default bounds."""
    if c.bounds is None or isinstance(c.bounds, str):
        name = c.bounds or "default"
        if name not in BOUNDS_PRESETS:
            raise SearchError(f"unknown bounds preset {name!r}; accepted: {', '.join(BOUNDS_PRESETS)}, "
                              f"or a mapping of rule: value in --config")
        return BOUNDS_PRESETS[name]
    if not isinstance(c.bounds, dict):
        raise SearchError(f"bounds must be a preset name ({', '.join(BOUNDS_PRESETS)}) or a mapping of rule: value, "
                          f"got {c.bounds!r}")
    accepted = [f.name for f in dataclasses.fields(Bounds)]
    unknown = sorted(set(c.bounds) - set(accepted))
    if unknown:
        raise SearchError(f"bounds: unknown rule(s) {', '.join(map(str, unknown))}; accepted: {', '.join(accepted)}")
    try:
        return Bounds(**{k: float(v) for k, v in c.bounds.items()})
    except (TypeError, ValueError) as e:
        raise SearchError(f"bounds: {e}") from None


def _check_config(c: SearchConfig) -> None:
    search_bounds(c)
    for name in ("population", "generations", "batch_size", "calib_batches", "pretrain_epochs"):
        if not isinstance(getattr(c, name), int) or getattr(c, name) < 1:
            raise SearchError(f"{name} must be a positive integer, got {getattr(c, name)!r}")
    if c.population < 4:
        raise SearchError(f"population must be at least 4, got {c.population}")
    if not isinstance(c.supernet_steps, int) or c.supernet_steps < 0:
        raise SearchError(f"supernet_steps must be a non-negative integer, got {c.supernet_steps!r}")
    if c.supernet_rule not in RULES:
        raise SearchError(f"unknown supernet rule {c.supernet_rule!r}; accepted: {', '.join(RULES)}")
    if not isinstance(c.supernet_warmup_steps, int) or c.supernet_warmup_steps < 0:
        raise SearchError(f"supernet_warmup_steps must be a non-negative integer, got {c.supernet_warmup_steps!r}")
    if not isinstance(c.supernet_sampled, int) or c.supernet_sampled < 0:
        raise SearchError(f"supernet_sampled must be a non-negative integer, got {c.supernet_sampled!r}")
    if c.space not in ("joint", "channel", "weight"):
        raise SearchError(f"unknown space {c.space!r}; accepted: joint, channel, weight")
    if c.strategy not in STRATEGIES:
        raise SearchError(f"unknown strategy {c.strategy!r}; accepted: {', '.join(STRATEGIES)}")
    if c.train_on not in ("cpu", "cuda"):
        raise SearchError(f"--train-on {c.train_on!r}; accepted: cpu, cuda")
    if c.train_on == "cuda" and not torch.cuda.is_available():
        raise SearchError("--train-on cuda: no CUDA device is available; use --train-on cpu")


class NSGA2Strategy:
    """pymoo NSGA-II with our operators and uniform-target survival, driven by ask/tell.

    Every generation the parents and the offspring are scored together (one supernet for the
    whole set), then pymoo's survival picks the next parents.
    """

    def __init__(self, problem: JointPruningProblem, config: SearchConfig, latency_range: tuple[float, float]):
        space = problem.space
        self.problem = problem
        self.algorithm = NSGA2(
            pop_size=config.population,
            sampling=operators.LatencySpreadSampling(space),
            crossover=operators.crossover(),
            mutation=operators.mutation(len(space.lower)),
            survival=UniformTargetSurvival(*latency_range),
            repair=operators.GridRepair(space),
            eliminate_duplicates=operators.duplicate_elimination(),
        )
        self.algorithm.setup(problem, seed=config.seed, termination=("n_gen", config.generations + 1))
        self.evaluator = Evaluator(skip_already_evaluated=False)

    def step(self) -> Population:
        """Scores one generation (parents + offspring) and selects the next parents; returns the scored set."""
        infills = self.algorithm.ask()
        scored = Population.merge(self.algorithm.pop, infills) if self.algorithm.is_initialized else infills
        self.evaluator.eval(self.problem, scored)
        self.algorithm.tell(infills=infills)
        return scored

    def population(self) -> Population:
        return self.algorithm.pop

    def state(self) -> bytes:
        """The whole algorithm (population, scores, RNG state) without the problem."""
        self.algorithm.problem = None
        try:
            return pickle.dumps(self.algorithm)
        finally:
            self.algorithm.problem = self.problem

    def restore(self, state: bytes) -> None:
        self.algorithm = pickle.loads(state)
        self.algorithm.problem = self.problem


STRATEGIES: dict[str, type] = {"nsga2": NSGA2Strategy, "random": RandomStrategy}


def register_strategy(name: str, cls: type) -> None:
    """Plugs in another search strategy (same interface as NSGA2Strategy)."""
    STRATEGIES[name] = cls


def write_json(path: Path, obj) -> None:
    """Atomic JSON write."""
    atomic_write(path, json.dumps(obj, indent=1) + "\n")


@dataclass
class Setup:
    """Everything a run needs, built and validated before any file is written."""

    spec: object
    space: object
    latency_space: object
    table: object
    predictor: object
    data: object
    model: object
    latency_min: float
    latency_full: float
    device_name: str


def _device_name(config: SearchConfig) -> str:
    return Path(config.device).stem if os.sep in config.device or config.device.endswith(".json") else config.device


def prepare(config: SearchConfig, pretrain: bool = True) -> Setup:
    """Validates model, device table, budget, data and weights; pretrains and orders channels."""
    from jcw.checkpoint import CheckpointError
    from jcw.data import DataError, load_dataset
    from jcw.layers import describe
    from jcw.materialize import order_channels
    from jcw.models import create_model, default_resolution, list_models
    from jcw.space import SearchSpace
    from jcw.training import in_memory, ordered_batches, start_weights
    from latency.devices import resolve_table
    from latency.netspec import load_shipped
    from latency.lut import LatencyTable, LatencyTableError, describe_layer
    from latency.predictor import Predictor

    if config.model not in list_models():
        raise SearchError(f"unknown model {config.model!r}; accepted: {', '.join(list_models())}")
    try:
        data = load_dataset(config.data, resolution=config.train_resolution, seed=config.seed)
    except DataError as e:
        raise SearchError(str(e)) from None
    data = dataclasses.replace(data, train=in_memory(data.train), val=in_memory(data.val))
    resolution = config.resolution or default_resolution(config.model)
    model = create_model(config.model, num_classes=data.num_classes)
    spec = describe(model, resolution, name=config.model)
    threads = config.threads or (1 if config.device == "host" else 4)
    try:
        if config.lut is not None:
            table = LatencyTable.load(config.lut)
        else:
            table = resolve_table(config.device, config.model, threads, resolution, spec=spec)
        latency_spec = spec
        if table.missing(spec) == [describe_layer(spec.layers[-1])]:
            latency_spec = load_shipped(config.model).at_resolution(resolution)
        predictor = Predictor(table, latency_spec)
    except (LatencyTableError, ValueError, KeyError) as e:
        raise SearchError(str(e).strip("'\"")) from None
    bounds = search_bounds(config)
    space = SearchSpace(spec, bounds=bounds, mode=config.space)
    latency_space = space if latency_spec is spec else SearchSpace(latency_spec, bounds=bounds, mode=config.space)
    out_ch, in_ch, density = latency_space.decode_arrays(np.stack([space.minimal(), space.full()]))
    latency_min, latency_full = (float(v) for v in predictor.predict(out_ch, in_ch, density))
    if config.budget_ms is not None and config.budget_ms < latency_min:
        raise SearchError(
            f"budget {config.budget_ms:g} ms is below the fastest arch of the {config.space} space of "
            f"{config.model} on {_device_name(config)} ({threads} thread(s), {table.kind} table): "
            f"{latency_min:.2f} ms (unpruned: {latency_full:.2f} ms); accepted: a budget >= {latency_min:.2f} ms, "
            f"a faster device or more --threads, or lower gene bounds (the `bounds` key of --config, e.g. "
            f"channel_residual / density)"
        )
    if pretrain:
        try:
            start_weights(model, config.model, config.weights, spec.layers[-1].name, data, config.seed,
                          config.pretrain_epochs, config.batch_size, config.pretrain_lr, config.train_on, config.quiet)
        except CheckpointError as e:
            raise SearchError(str(e)) from None
        model.to(config.train_on)
        calib = ordered_batches(data.train, config.batch_size, config.batch_size * config.calib_batches,
                                config.train_on)
        order_channels(model, spec, config.criterion, batches=calib)
    model.to(config.train_on)
    return Setup(spec, space, latency_space, table, predictor, data, model, latency_min, latency_full,
                 _device_name(config))


def _describe(setup: Setup, problem: JointPruningProblem, genes: np.ndarray, loss, acc, latency) -> list[dict]:
    """JSON records of candidates: arch, genes, latency, loss, accuracy, MACs, FLOPs, params."""
    genes = np.atleast_2d(genes)
    macs, params = setup.space.macs(genes), setup.space.params(genes)
    return [
        {
            "arch": setup.space.decode(g).to_dict(),
            "genes": [round(float(v), 6) for v in g],
            "latency_ms": float(t),
            "val_loss": float(lo),
            "val_acc": float(a),
            "macs": int(m),
            "flops": int(2 * m),
            "params": int(p),
        }
        for g, lo, a, t, m, p in zip(genes, loss, acc, latency, macs, params)
    ]


def _describe_references(setup: Setup, problem: JointPruningProblem, genes: np.ndarray, loss, acc) -> list[dict]:
    """JSON records of the reference models (``REFERENCE_NAMES``), scored with the candidates."""
    refs = _describe(setup, problem, genes, loss, acc, problem.latency(genes))
    return [{"name": name, **record} for name, record in zip(REFERENCE_NAMES, refs)]


def _default_out(config: SearchConfig, device_name: str) -> Path:
    budget = "nobudget" if config.budget_ms is None else f"{config.budget_ms:g}ms"
    return Path("runs") / f"{config.model}-{device_name}-{budget}-{time.strftime('%Y%m%d-%H%M%S')}"


def _generation_record(generation: int, scored: Population, budget_ms: float | None, references: list[dict]) -> dict:
    F, X, acc = scored.get("F"), scored.get("X"), scored.get("acc")
    return {
        "generation": generation,
        "references": [{k: r[k] for k in ("name", "genes", "latency_ms", "val_loss", "val_acc")} for r in references],
        "candidates": [
            {
                "genes": [round(float(v), 6) for v in x],
                "latency_ms": float(f[1]),
                "val_loss": float(f[0]),
                "val_acc": float(a),
                "feasible": budget_ms is None or bool(f[1] <= budget_ms),
            }
            for x, f, a in zip(X, F, acc)
        ],
    }


def _summary(record: dict, reference: tuple[float, float], budget_ms: float | None, generations: int) -> str:
    cands = [c for c in record["candidates"] if c["feasible"]]
    F = np.array([[c["val_loss"], c["latency_ms"]] for c in cands]).reshape(-1, 2)
    front = non_dominated(F)
    best = max(cands, key=lambda c: c["val_acc"], default=None)
    best_text = "none within budget" if best is None else f"{best['val_acc']:.3f} at {best['latency_ms']:.1f} ms"
    under = "under budget" if budget_ms is not None else "overall"
    return (f"gen {record['generation'] + 1}/{generations}: best acc {under} {best_text}, "
            f"front {len(front)}, HV {hypervolume(F, reference):.4f}")


def run_search(config: SearchConfig, dist: DistContext | None = None) -> Path:
    """Runs (or resumes) a search; returns the run directory holding front.json and friends.

    Under torchrun every process calls it (``dist``: default ``init_distributed``): rank 0 runs the
    strategy, prints and writes; the others train and score the supernet with it (``SupernetEstimator.follow``).
    """
    from jcw.plot import plot_runs
    from jcw.supernet import Supernet, SupernetEstimator
    from jcw.training import RandomBatches, atomic_torch_save, gather, ordered_batches

    dist = dist or init_distributed(config.train_on)
    checkpoint = None
    if config.resume:
        if config.out is None:
            raise SearchError("--resume needs --out RUN_DIR (the directory of the run to continue)")
        out = Path(config.out)
        if not (out / "config.json").is_file():
            raise SearchError(f"--resume: {out} is not a search run directory (no config.json)")
        if (out / "front.json").is_file() and not (out / ".incomplete").exists():
            if dist.is_main:
                print(f"{out}: the search already finished; see {out / 'front.json'}")
            return out
        saved = json.loads((out / "config.json").read_text())
        saved.pop("world_size", None)
        config = SearchConfig(**{**saved, "resume": True, "quiet": config.quiet, "out": str(out)})
        if (out / "checkpoint.pt").is_file():
            checkpoint = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)

    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    check_world_size(config, dist)
    setup = prepare(config, pretrain=checkpoint is None)
    out = dist.broadcast_object(Path(config.out) if config.out else _default_out(config, setup.device_name))
    if not config.resume and (out / "config.json").exists():
        raise SearchError(f"--out {out} already holds a search run; use --resume to continue it or another --out")
    dist.barrier()  # every rank has read the run directory before rank 0 writes to it
    device = dist.device
    supernet = Supernet(setup.model, setup.spec, dist).to(device)
    generator = torch.Generator().manual_seed(config.seed)
    calib_index = torch.randperm(len(setup.data.train), generator=torch.Generator().manual_seed(config.seed + 1))
    calib_index = calib_index[: config.batch_size * config.calib_batches]
    calib = [gather(setup.data.train, dist.split(calib_index[s:s + config.batch_size]), device)
             for s in range(0, len(calib_index), config.batch_size)]
    val = ordered_batches(setup.data.val, config.batch_size, config.val_samples, device, dist)
    steps = config.supernet_steps
    if config.supernet_epochs is not None:
        steps = math.ceil(config.supernet_epochs * len(setup.data.train) / config.batch_size / config.generations)
    ref_genes = np.stack([setup.space.full()] + [setup.space.uniform(w) for w in UNIFORM_WIDTHS])
    estimator = SupernetEstimator(supernet, setup.space,
                                  RandomBatches(setup.data.train, config.batch_size, generator, device, dist),
                                  calib, val, steps, config.supernet_lr, generator, quiet=config.quiet or not dist.is_main,
                                  references=ref_genes, rule=config.supernet_rule, sampled=config.supernet_sampled)
    problem = JointPruningProblem(setup.space, setup.predictor, estimator, config.budget_ms, setup.latency_space)
    latency_max = config.budget_ms if config.budget_ms is not None else setup.latency_full
    strategy = STRATEGIES[config.strategy](problem, config, (setup.latency_min, latency_max))
    reference = (math.log(setup.data.num_classes), latency_max)
    history: list[dict] = []
    start = 0
    if checkpoint is not None:
        supernet.net.load_state_dict(checkpoint["supernet"])
        generator.set_state(checkpoint["generator"])
        strategy.restore(checkpoint["strategy"])
        history, start = checkpoint["history"], checkpoint["generation"]
    dist.broadcast_state(supernet)
    if not dist.is_main:
        estimator.follow()
        return out

    out.mkdir(parents=True, exist_ok=True)
    (out / ".incomplete").touch()
    (out / "front.json").unlink(missing_ok=True)
    write_json(out / "config.json", {**config.to_dict(), "world_size": dist.world_size})
    _print_header(config, setup, out)
    if checkpoint is None:
        estimator.warm_up(config.supernet_warmup_steps)
    with tqdm(total=config.generations, initial=start, desc="search", disable=config.quiet, unit="gen") as bar:
        for generation in range(start, config.generations):
            scored = strategy.step()
            history.append(_generation_record(generation, scored, config.budget_ms,
                                              _describe_references(setup, problem, ref_genes, *estimator.reference_scores)))
            atomic_torch_save({
                "generation": generation + 1,
                "strategy": strategy.state(),
                "supernet": {k: v.cpu() for k, v in supernet.net.state_dict().items()},
                "generator": generator.get_state(),
                "history": history,
            }, out / "checkpoint.pt")
            if not config.quiet:
                bar.write(_summary(history[-1], reference, config.budget_ms, config.generations))
            bar.update(1)
    estimator.release()

    pop = strategy.population()
    F, X, acc = pop.get("F"), pop.get("X"), pop.get("acc")
    feasible = np.ones(len(F), dtype=bool) if config.budget_ms is None else F[:, 1] <= config.budget_ms
    idx = np.flatnonzero(feasible)[non_dominated(F[feasible])]
    idx = idx[np.argsort(F[idx, 1], kind="stable")]
    front = _describe(setup, problem, X[idx], F[idx, 0], acc[idx], F[idx, 1])
    last = history[-1]["references"]
    refs = _describe_references(setup, problem, ref_genes, [r["val_loss"] for r in last], [r["val_acc"] for r in last])
    best = max(front, key=lambda c: (c["val_acc"], -c["latency_ms"]), default=None)
    result = {
        "model": config.model,
        "world_size": dist.world_size,
        "device": setup.device_name,
        "threads": setup.table.threads,
        "resolution": setup.spec.resolution,
        "train_resolution": setup.data.resolution,
        "data": setup.data.name,
        "space": config.space,
        "strategy": config.strategy,
        "budget_ms": config.budget_ms,
        "seed": config.seed,
        "table": {"device": setup.table.device, "threads": setup.table.threads, "provenance": setup.table.provenance},
        "command": config.command,
        "latency_min_ms": setup.latency_min,
        "hypervolume": hypervolume(F[idx], reference),
        "hypervolume_reference": list(reference),
        "references": refs,
        "candidates": front,
    }
    write_json(out / "history.json", {"generations": history})
    if best is not None:
        write_json(out / "best.json", {**{k: result[k] for k in ("model", "device", "threads", "resolution",
                                                                 "budget_ms", "table")}, **best})
    plot_runs([out], out / "front.png", pending={out: result})
    write_json(out / "front.json", result)
    (out / ".incomplete").unlink(missing_ok=True)
    print(final_table(best, refs[0], setup.table, config))
    print(f"results: {out}")
    return out


def check_world_size(config: SearchConfig, dist: DistContext) -> None:
    """The global batch (``batch_size``) must split evenly over the processes (each trains on an equal part)."""
    if config.batch_size % dist.world_size:
        raise SearchError(f"batch_size {config.batch_size} does not split evenly over {dist.world_size} processes; "
                          f"use a multiple of {dist.world_size}")


def _print_header(config: SearchConfig, setup: Setup, out: Path) -> None:
    if config.quiet:
        return
    budget = "none" if config.budget_ms is None else f"{config.budget_ms:g} ms"
    print(f"search {config.model} on {setup.device_name} ({setup.table.threads} thread(s), "
          f"{setup.table.kind} latency table), budget {budget}; fastest arch {setup.latency_min:.2f} ms, "
          f"unpruned {setup.latency_full:.2f} ms; space {config.space}, {config.strategy}, "
          f"population {config.population} x {config.generations} generations -> {out}")
    print(describe_provenance(setup.table))
    if setup.latency_space is not setup.space:
        print(f"note: the table prices {config.model}'s classifier at {setup.latency_space.spec.num_classes} "
              f"classes (it has no entry for {setup.spec.num_classes}); the other layers are exact")


def final_table(best: dict | None, unpruned: dict, table, config: SearchConfig) -> str:
    """The closing table: chosen arch vs the unpruned model, and the latency table's provenance."""
    rows = [("predicted latency (ms)", "latency_ms", "{:.2f}"), ("supernet-estimated acc", "val_acc", "{:.4f}"),
            ("val loss", "val_loss", "{:.4f}"), ("MACs (M)", "macs", "{:.2f}"), ("params (M)", "params", "{:.3f}")]
    scale = {"macs": 1e-6, "params": 1e-6}
    lines = [f"{'':24}{'chosen':>12}{'unpruned':>12}"]
    for label, key, fmt in rows:
        chosen = "-" if best is None else fmt.format(best[key] * scale.get(key, 1))
        lines.append(f"{label:24}{chosen:>12}{fmt.format(unpruned[key] * scale.get(key, 1)):>12}")
    if best is None:
        lines.append("no candidate met the budget")
    lines.append(describe_provenance(table))
    return "\n".join(lines)


def describe_provenance(table) -> str:
    """One line: which table, measured or modelled, on what, and how."""
    prov = table.provenance
    where = prov.get("device") or prov.get("cpu")
    engine = prov.get("engine") or (f"engine {prov['engine_version']}" if prov.get("engine_version") else None)
    details = ", ".join(str(x) for x in (where, prov.get("method"), engine) if x)
    return f"latency table: {table.device}, {table.threads} thread(s), {prov['kind']}" + (f" ({details})" if details else "")


def parse_args(argv=None) -> tuple[SearchConfig, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(prog="jcw-search", description=__doc__)
    add = parser.add_argument
    add("--config", metavar="FILE.yaml", help="YAML file of options (keys = long flag names)")
    add("--model", help="zoo model (default mobilenet_v2)")
    add("--device", help="a53 | a72 | host | path to a latency table (default a53)")
    add("--lut", metavar="FILE", help="latency table file to use instead of the device's shipped one")
    add("--budget", help="latency budget: 35ms, '35 ms', 0.035s, or a bare number of ms")
    add("--data", help="digits (default, embedded) | IMAGEFOLDER_ROOT | cifar10:PATH | cifar100:PATH")
    add("--weights", metavar="FILE", help="full-model checkpoint (torchvision keys accepted); default: pretrain")
    add("--criterion", help="channel importance order (default l1)")
    add("--space", choices=["joint", "channel", "weight"], help="joint (default), channel-only, weight-only")
    add("--bounds", help=f"gene lower bounds preset: {' | '.join(BOUNDS_PRESETS)} (default: default; jcw = JCW's "
        "ResNet18 values); rule overrides go in --config as a `bounds:` mapping")
    add("--strategy", help=f"search strategy (default nsga2; registered: {', '.join(STRATEGIES)})")
    add("--threads", type=int, help="which table of the device: default 4 for a53/a72, 1 for host")
    add("--population", type=int, help="population size (quick 8, paper 64)")
    add("--generations", type=int, help="generations (quick 6, paper 128)")
    add("--supernet-steps", type=int, help="supernet training steps per generation (quick 40)")
    add("--supernet-rule", help="candidates per supernet step: sandwich (default: largest + smallest + "
        "sampled, distilled from the largest) | jcw (one sampled candidate per step)")
    add("--preset", choices=list(PRESETS), help="quick (default) | paper (64 x 128, JCW schedule)")
    add("--resolution", type=int, help="deployment resolution the latency table is queried at (model default)")
    add("--train-resolution", type=int, help="input size of the accuracy proxy (dataset default)")
    add("--train-on", choices=["cpu", "cuda"], help="where the supernet trains (default cpu)")
    add("--torch-threads", type=int, help="CPU threads torch trains with (default 1: fastest on a shared machine)")
    add("--seed", type=int, help="seed of everything random (default 0)")
    add("--out", metavar="DIR", help="run directory (default runs/<model>-<device>-<budget>-<time>/)")
    add("--resume", action="store_true", default=None, help="continue the run in --out from its checkpoint")
    add("--quiet", action="store_true", default=None, help="no progress bars or per-generation lines")
    args = vars(parser.parse_args(argv))
    config_file = args.pop("config")
    args["budget_ms"] = args.pop("budget")
    args["command"] = " ".join(shlex.quote(a) for a in ["python", "-m", "jcw.search", *(sys.argv[1:] if argv is None else argv)])
    try:
        return build_config(args, config_file), parser
    except SearchError as e:
        parser.error(str(e))


def main(argv=None) -> int:
    config, parser = parse_args(argv)
    dist = init_distributed(config.train_on)
    try:
        run_search(config, dist)
    except SearchError as e:
        if dist.is_main:
            print(f"jcw-search: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if dist.is_main:
            print("jcw-search: interrupted; continue with --resume --out RUN_DIR", file=sys.stderr)
        return 130
    finally:
        shutdown(dist)
    return 0


if __name__ == "__main__":
    sys.exit(main())
