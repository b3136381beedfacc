"""The Python API: model in, result out.  The CLIs are shells over these calls."""

from __future__ import annotations

import os
from pathlib import Path

from jcw.core.errors import UsageError
from jcw.core.space import Arch
from jcw.core.util import default_threads, parse_budget


def _spec_of(model, resolution: int | None):
    """(NetSpec, zoo name or None) of an nn.Module at ``resolution`` (default: the zoo model's own)."""
    from jcw.layers import describe_model
    from jcw.models import default_resolution, zoo_name

    name = zoo_name(model)
    if resolution is None:
        if name is None:
            raise UsageError(f"resolution is required for a {type(model).__name__} (not a zoo model)")
        resolution = default_resolution(name)
    return describe_model(model, resolution, name), name


def predict_latency(model, device="a53", threads: int | None = None, resolution: int | None = None) -> float:
    """Predicted milliseconds of ``model`` (an nn.Module, unpruned) or of an ``Arch`` on ``device``.

    ``device``: a53 | a72 | host | a table path | a LatencyTable.  ``threads``: default 4 on a board, 1 on host.
    ``resolution``: an Arch carries its own; a module defaults to its zoo resolution.  Works without torch
    for an Arch of a zoo model.
    """
    from jcw.core.netspec import load_shipped
    from latency.devices import resolve_table
    from latency.lut import LatencyTable
    from latency.predictor import predictor_for

    threads = threads or default_threads(device if isinstance(device, str) else None)
    if isinstance(model, Arch):
        arch = model
        spec = load_shipped(arch.model).at_resolution(resolution or arch.resolution).with_classes(arch.layers[-1].out_ch)
    else:
        spec, _ = _spec_of(model, resolution)
        arch = None
    if isinstance(device, LatencyTable):
        table = device
    elif isinstance(device, (str, os.PathLike)):
        table = resolve_table(str(device), spec.model, threads, spec.resolution, progress=False, spec=spec)
    else:
        raise UsageError(f"device must be a53, a72, host, a table path or a LatencyTable, got {type(device).__name__}")
    predictor = predictor_for(table, spec)
    return predictor.predict_arch(arch) if arch is not None else predictor.full()


def search(model, data="digits", device="a53", budget=None, threads: int | None = None,
           resolution: int | None = None, population: int = 8, generations: int = 6, seed: int = 0,
           progress: bool = False, out=None, **options):
    """Searches the per-layer channel widths and 4x1-block densities of ``model`` for ``device`` within ``budget``.

    Args:
        model: an nn.Module jcw can describe (the zoo's, ``jcw.load_model("path/to/file.py:factory")``, or any
            instance built like them); it is not changed.  The result records the reference that rebuilds it
            (``info["model_ref"]``, front.json / best.json ``model_ref``): the one ``load_model`` or
            ``create_model`` tagged it with, else its class as ``module:Class`` when that is importable, else
            None (then ``jcw train`` / ``jcw export`` need ``--model``).
        data: a dataset spec as on the CLI ("digits", "cifar10:PATH", an ImageFolder root), a
            jcw.data.DataBundle, or a (train, val) pair of Datasets yielding (image tensor, int label).
        device: a53 | a72 | host | a latency table path | a LatencyTable.
        budget: "35ms", "0.035s", or a number of ms; None searches the whole latency range.
        resolution: the deployment resolution of the latency table; default: the zoo model's, 224 otherwise.
        progress: print the header, progress bars and per-generation lines.
        out: a run directory to write (as the CLI does) while searching; None writes nothing.
        options: every other search option by its CLI name (supernet_steps, space, strategy, bounds, ...).

    Returns:
        jcw.SearchResult.  Raises jcw.UsageError for a user mistake, with the message the CLI prints.
    """
    from jcw.models import model_name
    from jcw.search.config import build_config
    from jcw.search.runner import run
    from latency.lut import LatencyTable

    table = device if isinstance(device, LatencyTable) else None
    if table is None and not isinstance(device, (str, os.PathLike)):
        raise UsageError(f"device must be a53, a72, host, a table path or a LatencyTable, got {type(device).__name__}")
    if "budget_ms" in options:
        raise UsageError("pass the budget as budget= (e.g. budget='35ms')")
    values = dict(options, population=population, generations=generations, seed=seed,
                  device=table.device if table is not None else str(device), threads=threads,
                  resolution=resolution, quiet=not progress, out=None if out is None else str(out),
                  budget_ms=None if budget is None else parse_budget(budget),
                  model=model_name(model))
    if isinstance(data, (str, Path)):
        values["data"] = str(data)
    config = build_config(values)
    return run(config, model=model, data=None if isinstance(data, (str, Path)) else data, table=table)


def materialize(model, arch: Arch, criterion: str = "l1"):
    """(physically smaller dense model, {layer: 4x1 block mask}) of ``arch``; ``model`` is not changed."""
    from jcw.prune.materialize import materialize as _materialize

    return _materialize(model, arch, criterion=criterion)


def export_onnx(model, path, resolution: int, masks: dict | None = None, metadata: dict | None = None) -> Path:
    """Writes ``model`` as ONNX for the engine; ``masks`` (from ``materialize``) are applied to a copy first."""
    import copy

    import torch

    from jcw.export import export_onnx as _export

    if masks:
        model = copy.deepcopy(model)
        modules = dict(model.named_modules())
        with torch.no_grad():
            for name, mask in masks.items():
                if name not in modules:
                    raise UsageError(f"masks: the model has no layer {name!r}")
                modules[name].weight.mul_(mask.to(modules[name].weight.dtype))
    return _export(model, path, resolution, metadata=metadata)
