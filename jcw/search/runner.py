"""The search run: validate the inputs, pretrain and order channels, run the strategy generation by generation."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pymoo.core.population import Population
from tqdm.auto import tqdm

from jcw.core.errors import UsageError
from jcw.core.netspec import NetSpec
from jcw.core.space import SearchSpace
from jcw.core.util import default_threads, device_name, write_json
from jcw.data import DataBundle
from jcw.search.config import SearchConfig, search_bounds
from jcw.search.problem import JointPruningProblem, hypervolume, non_dominated
from jcw.search.result import Candidate, SearchResult, describe_provenance, final_table
from jcw.search.strategies import STRATEGIES
from jcw.train.distributed import DistContext, init_distributed
from latency.lut import LatencyTable
from latency.predictor import Predictor, predictor_for

UNIFORM_WIDTHS = (0.75, 0.5)
REFERENCE_NAMES = ("unpruned",) + tuple(f"uniform {w:g}x" for w in UNIFORM_WIDTHS)


@dataclass
class Setup:
    """Everything a run needs, built and validated before any file is written."""

    spec: NetSpec
    space: SearchSpace
    latency_space: SearchSpace  # over the predictor's spec (its classifier may be the zoo's head)
    table: LatencyTable
    predictor: Predictor
    data: DataBundle
    model: torch.nn.Module
    latency_min: float
    latency_full: float
    device_name: str


def latency_table(device, model_name: str, threads: int, resolution: int, spec: NetSpec,
                  lut: str | None = None) -> LatencyTable:
    """The table of ``device`` (a53 | a72 | host | a table path | a LatencyTable), or the file ``lut`` when given."""
    from latency.devices import resolve_table

    if isinstance(device, LatencyTable):
        return device
    try:
        if lut is not None:
            return LatencyTable.load(lut)
        return resolve_table(device, model_name, threads, resolution, spec=spec)
    except (KeyError, ValueError) as e:
        raise UsageError(str(e).strip("'\"")) from None


def prepare(config: SearchConfig, pretrain: bool = True, model: torch.nn.Module | None = None,
            data=None, table: LatencyTable | None = None) -> Setup:
    """Validates model, device table, budget, data and weights; pretrains and orders channels.

    ``model``: the network to search (default: the zoo's ``config.model``); it is copied, never changed.
    ``data``: a spec string, a DataBundle or a (train, val) pair (default: ``config.data``).
    ``table``: a LatencyTable to use instead of ``config.device``'s.
    """
    from jcw.data import as_bundle
    from jcw.layers import classifier_classes, describe_model
    from jcw.models import deploy_resolution, load_model, model_name, zoo_name
    from jcw.prune.materialize import order_channels
    from jcw.train.loops import in_memory, ordered_batches, start_weights

    zoo = model is None
    if zoo:  # a reference: a zoo name, path/to/file.py:factory or package.module:factory
        model = load_model(config.model, num_classes=as_bundle(config.data if data is None else data, None,
                                                                config.train_resolution, config.seed).num_classes,
                           seed=config.seed)  # the same --seed, the same starting weights
    else:
        model = copy.deepcopy(model)
    num_classes = classifier_classes(model)
    data = as_bundle(config.data if data is None else data, num_classes, config.train_resolution, config.seed)
    data = dataclasses.replace(data, train=in_memory(data.train), val=in_memory(data.val))
    resolution = deploy_resolution(model, config.resolution)
    label = model_name(model)  # zoo name, or a label such as tiny.build (the spec's and arch's model field)
    spec = describe_model(model, resolution, label)
    threads = config.threads or default_threads(config.device)
    table = latency_table(table if table is not None else config.device, label, threads, resolution, spec,
                          config.lut)
    try:
        predictor = predictor_for(table, spec)
    except (KeyError, ValueError) as e:
        raise UsageError(str(e).strip("'\"")) from None
    bounds = search_bounds(config)
    space = SearchSpace(spec, bounds=bounds, mode=config.space)
    latency_space = space if predictor.spec is spec else SearchSpace(predictor.spec, bounds=bounds, mode=config.space)
    out_ch, in_ch, density = latency_space.decode_arrays(np.stack([space.minimal(), space.full()]))
    latency_min, latency_full = (float(v) for v in predictor.predict(out_ch, in_ch, density))
    name = device_name(config.device) if not isinstance(config.device, LatencyTable) else table.device
    if config.budget_ms is not None and config.budget_ms < latency_min:
        raise UsageError(
            f"budget {config.budget_ms:g} ms is below the fastest arch of the {config.space} space of "
            f"{config.model} on {name} ({table.threads} thread(s), {table.kind} table): "
            f"{latency_min:.2f} ms (unpruned: {latency_full:.2f} ms); accepted: a budget >= {latency_min:.2f} ms, "
            f"a faster device or more --threads, or lower gene bounds (the `bounds` key of --config, e.g. "
            f"channel_residual / density)"
        )
    if pretrain:
        start_weights(model, label, config.weights, spec.layers[-1].name, data, config.seed,
                      config.pretrain_epochs, config.batch_size, config.pretrain_lr, config.train_on, config.quiet,
                      cache=None if zoo_name(model) is not None else False)
        model.to(config.train_on)
        calib = ordered_batches(data.train, config.batch_size, config.batch_size * config.calib_batches,
                                config.train_on)
        order_channels(model, spec, config.criterion, batches=calib)
    model.to(config.train_on)
    return Setup(spec, space, latency_space, table, predictor, data, model, latency_min, latency_full, name)


def candidates(setup: Setup, problem: JointPruningProblem, genes: np.ndarray, loss, acc, latency,
               names=None) -> list[Candidate]:
    """Candidates of ``genes`` with their scores; MACs and params count kept weights."""
    genes = np.atleast_2d(genes)
    macs, params = setup.space.macs(genes), setup.space.params(genes)
    names = names or [None] * len(genes)
    return [Candidate(setup.space.decode(g), float(t), float(lo), float(a), int(m), int(p),
                      tuple(round(float(v), 6) for v in g), name)
            for g, lo, a, t, m, p, name in zip(genes, loss, acc, latency, macs, params, names)]


def _references(setup: Setup, problem: JointPruningProblem, genes: np.ndarray, loss, acc) -> list[Candidate]:
    return candidates(setup, problem, genes, loss, acc, problem.latency(genes), list(REFERENCE_NAMES))


def _default_out(config: SearchConfig, name: str) -> Path:
    budget = "nobudget" if config.budget_ms is None else f"{config.budget_ms:g}ms"
    from jcw.models import model_label

    return Path("runs") / f"{model_label(config.model)}-{name}-{budget}-{time.strftime('%Y%m%d-%H%M%S')}"


def _generation_record(generation: int, scored: Population, budget_ms: float | None,
                       references: list[Candidate]) -> dict:
    F, X, acc = scored.get("F"), scored.get("X"), scored.get("acc")
    return {
        "generation": generation,
        "references": [{"name": r.name, "genes": list(r.genes), "latency_ms": r.latency_ms, "val_loss": r.val_loss,
                        "val_acc": r.val_acc} for r in references],
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


def check_world_size(config: SearchConfig, dist: DistContext) -> None:
    """The global batch (``batch_size``) must split evenly over the processes (each trains on an equal part)."""
    if config.batch_size % dist.world_size:
        raise UsageError(f"batch_size {config.batch_size} does not split evenly over {dist.world_size} processes; "
                         f"use a multiple of {dist.world_size}")


def _print_header(config: SearchConfig, setup: Setup, out: Path | None) -> None:
    budget = "none" if config.budget_ms is None else f"{config.budget_ms:g} ms"
    print(f"search {config.model} on {setup.device_name} ({setup.table.threads} thread(s), "
          f"{setup.table.kind} latency table), budget {budget}; fastest arch {setup.latency_min:.2f} ms, "
          f"unpruned {setup.latency_full:.2f} ms; space {config.space}, {config.strategy}, "
          f"population {config.population} x {config.generations} generations" + (f" -> {out}" if out else ""))
    print(describe_provenance(setup.table))
    if setup.latency_space is not setup.space:
        print(f"note: the table prices {config.model}'s classifier at {setup.latency_space.spec.num_classes} "
              f"classes (it has no entry for {setup.spec.num_classes}); the other layers are exact")


def _resume_state(config: SearchConfig, dist: DistContext):
    """(config saved in the run directory, its checkpoint or None), or (None, None) when the run already finished."""
    if config.out is None:
        raise UsageError("--resume needs --out RUN_DIR (the directory of the run to continue)")
    out = Path(config.out)
    if not (out / "config.json").is_file():
        raise UsageError(f"--resume: {out} is not a search run directory (no config.json)")
    if (out / "front.json").is_file() and not (out / ".incomplete").exists():
        if dist.is_main:
            print(f"{out}: the search already finished; see {out / 'front.json'}")
        return None, None
    saved = json.loads((out / "config.json").read_text())
    saved.pop("world_size", None)
    config = SearchConfig(**{**saved, "resume": True, "quiet": config.quiet, "out": str(out)})
    checkpoint = None
    if (out / "checkpoint.pt").is_file():
        checkpoint = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    return config, checkpoint


def run(config: SearchConfig, model: torch.nn.Module | None = None, data=None, table: LatencyTable | None = None,
        dist: DistContext | None = None) -> SearchResult | None:
    """Runs (or, with ``config.resume``, continues) a search and returns its result.

    Files (config.json, checkpoint.pt every generation, then ``SearchResult.save``) are written only when
    ``config.out`` is set; nothing is printed when ``config.quiet``.  ``model`` / ``data`` / ``table``: see
    ``prepare``.  Under torchrun every process calls it (``dist``: default ``init_distributed``): rank 0 runs
    the strategy, prints and writes; the others train and score the supernet with it and return None.
    """
    from jcw.search.supernet import Supernet, SupernetEstimator
    from jcw.train.loops import RandomBatches, atomic_torch_save, gather, ordered_batches

    dist = dist or init_distributed(config.train_on)
    checkpoint = None
    if config.resume:
        config, checkpoint = _resume_state(config, dist)
        if config is None:
            return None
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    check_world_size(config, dist)
    setup = prepare(config, pretrain=checkpoint is None, model=model, data=data, table=table)
    out = dist.broadcast_object(Path(config.out) if config.out else None)
    if out is not None and not config.resume and (out / "config.json").exists():
        raise UsageError(f"--out {out} already holds a search run; use --resume to continue it or another --out")
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
        return None

    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".incomplete").touch()
        (out / "front.json").unlink(missing_ok=True)
        write_json(out / "config.json", {**config.to_dict(), "world_size": dist.world_size})
    if not config.quiet:
        _print_header(config, setup, out)
    if checkpoint is None:
        estimator.warm_up(config.supernet_warmup_steps)
    with tqdm(total=config.generations, initial=start, desc="search", disable=config.quiet, unit="gen") as bar:
        for generation in range(start, config.generations):
            scored = strategy.step()
            history.append(_generation_record(generation, scored, config.budget_ms,
                                              _references(setup, problem, ref_genes, *estimator.reference_scores)))
            if out is not None:
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

    from jcw.models import model_reference

    pop = strategy.population()
    F, X, acc = pop.get("F"), pop.get("X"), pop.get("acc")
    feasible = np.ones(len(F), dtype=bool) if config.budget_ms is None else F[:, 1] <= config.budget_ms
    idx = np.flatnonzero(feasible)[non_dominated(F[feasible])]
    idx = idx[np.argsort(F[idx, 1], kind="stable")]
    last = history[-1]["references"]
    info = {
        "model": setup.spec.model,
        "model_ref": model_reference(setup.model),  # rebuilds the model: jcw.models.load_model(model_ref)
        "num_classes": setup.spec.num_classes,
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
        "hypervolume_reference": list(reference),
    }
    result = SearchResult(
        front=candidates(setup, problem, X[idx], F[idx, 0], acc[idx], F[idx, 1]),
        references=_references(setup, problem, ref_genes, [r["val_loss"] for r in last], [r["val_acc"] for r in last]),
        history=history, hypervolume=hypervolume(F[idx], reference), info=info,
        config=config.to_dict(), model=setup.model.cpu())
    if out is not None:
        result.save(out)
        (out / ".incomplete").unlink(missing_ok=True)
    if not config.quiet:
        print(final_table(result.best, result.references[0], setup.table))
        if out is not None:
            print(f"results: {out}")
    return result


def run_search(config: SearchConfig, dist: DistContext | None = None) -> Path:
    """The CLI's run: files always (``config.out`` or runs/<model>-<device>-<budget>-<time>/); returns the run dir."""
    if config.out is None and not config.resume:
        config = dataclasses.replace(config, out=str(_default_out(config, device_name(config.device))))
    run(config, dist=dist)
    return Path(config.out)
