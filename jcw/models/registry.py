"""The zoo registry: register_model, create_model, list_models, zoo_name, default_resolution, default_num_classes.

The zoo's models are registered by ``jcw.models`` (imported first whenever this module is)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Callable

from torch import nn


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its constructor and the input it was designed for."""

    build: Callable[[int], nn.Module]
    resolution: int
    num_classes: int


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, build: Callable[[int], nn.Module], resolution: int, num_classes: int) -> None:
    """Add a model constructor ``build(num_classes) -> nn.Module`` to the registry."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = ModelEntry(build, resolution, num_classes)


def _entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the shell-style ``pattern``, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def create_model(name: str, num_classes: int | None = None) -> nn.Module:
    """A freshly initialised model; ``num_classes`` defaults to the model's dataset (1000 or 10)."""
    entry = _entry(name)
    n = entry.num_classes if num_classes is None else int(num_classes)
    if n < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    model = entry.build(n)
    model.zoo_name = name  # zoo_name(model): default resolution, shipped spec and latency tables of the zoo
    return model


def zoo_name(model: nn.Module) -> str | None:
    """The registry name of a model made by ``create_model``, else None."""
    name = getattr(model, "zoo_name", None)
    return name if name in _REGISTRY else None


def default_resolution(name: str) -> int:
    """Input size the model was designed for: 224 (ImageNet layouts) or 32 (CIFAR)."""
    return _entry(name).resolution


def default_num_classes(name: str) -> int:
    """Classes of the model's home dataset: 1000 (ImageNet) or 10 (CIFAR-10)."""
    return _entry(name).num_classes
