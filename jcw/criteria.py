"""Channel importance criteria: per-coupling-group scores (higher = more important) and their registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from latency.netspec import NetSpec

# fn(model, spec, batches, generator) -> {group id: scores of the group's channels}
CriterionFn = Callable[[nn.Module, NetSpec, "Iterable | None", "torch.Generator | None"], dict[int, Tensor]]


@dataclass(frozen=True)
class Criterion:
    """A registered criterion; ``needs_data`` ones require calibration ``batches``."""

    name: str
    fn: CriterionFn
    needs_data: bool = False


_CRITERIA: dict[str, Criterion] = {}


def register_criterion(name: str, fn: CriterionFn | None = None, *, needs_data: bool = False):
    """Register ``fn`` under ``name``; usable as ``@register_criterion("name")``."""

    def add(f: CriterionFn) -> CriterionFn:
        if name in _CRITERIA:
            raise ValueError(f"criterion {name!r} is already registered")
        _CRITERIA[name] = Criterion(name, f, needs_data)
        return f

    return add if fn is None else add(fn)


def list_criteria() -> list[str]:
    """Registered criterion names, sorted."""
    return sorted(_CRITERIA)


def get_criterion(name: str) -> Criterion:
    """The criterion called ``name``."""
    try:
        return _CRITERIA[name]
    except KeyError:
        raise ValueError(f"unknown criterion {name!r}; known: {', '.join(list_criteria())}") from None


def producers(spec: NetSpec, group: int) -> list[str]:
    """Layers that create a group's channels: its members except depthwise convs (which only pass them on)."""
    return [x.name for x in spec.layers if x.group == group and x.kind != "depthwise"]


def filter_scores(model: nn.Module, spec: NetSpec, per_filter: Callable[[Tensor], Tensor]) -> dict[int, Tensor]:
    """Sum over a group's producer convs of ``per_filter(weight) -> (out_ch,)`` (coupled layers added)."""
    scores = {}
    for g in spec.groups:
        total = torch.zeros(g.channels, dtype=torch.float64)
        for name in producers(spec, g.id):
            total += per_filter(model.get_submodule(name).weight.detach()).to(torch.float64).cpu()
        scores[g.id] = total
    return scores


@register_criterion("l1")
def l1(model: nn.Module, spec: NetSpec, batches=None, generator=None) -> dict[int, Tensor]:
    """L1 norm of each filter, sum_{c,kh,kw} |W[o, c, kh, kw]|, summed over coupled layers."""
    return filter_scores(model, spec, lambda w: w.abs().flatten(1).sum(1))


@register_criterion("l2")
def l2(model: nn.Module, spec: NetSpec, batches=None, generator=None) -> dict[int, Tensor]:
    """L2 norm of each filter, sqrt(sum W[o]^2), summed over coupled layers."""
    return filter_scores(model, spec, lambda w: w.flatten(1).norm(dim=1))


@register_criterion("random")
def random(model: nn.Module, spec: NetSpec, batches=None, generator=None) -> dict[int, Tensor]:
    """Uniform random scores (the neutral order), drawn from ``generator``."""
    return {g.id: torch.rand(g.channels, generator=generator, dtype=torch.float64) for g in spec.groups}


def score_channels(model: nn.Module, spec: NetSpec, criterion: str = "l1", batches: Iterable | None = None,
                   generator: torch.Generator | None = None) -> dict[int, Tensor]:
    """Importance of every channel of every coupling group: {group id: Tensor(channels)}, higher = keep.

    ``generator`` seeds random criteria (default: a generator seeded with 0).
    """
    crit = get_criterion(criterion)
    if crit.needs_data and batches is None:
        raise ValueError(f"criterion {criterion!r} needs calibration batches (batches=None given)")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    scores = crit.fn(model, spec, batches, generator)
    for g in spec.groups:
        if g.id not in scores or tuple(scores[g.id].shape) != (g.channels,):
            raise ValueError(f"criterion {criterion!r} returned no ({g.channels},) scores for group {g.id}")
    return scores
