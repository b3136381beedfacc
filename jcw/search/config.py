"""Search configuration: every option of a run, presets, --config YAML files, validation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from jcw.core.errors import UsageError
from jcw.core.space import BOUNDS_PRESETS, MODES, Bounds
from jcw.core.util import parse_budget

PRESETS = {
    "quick": {"population": 8, "generations": 6, "supernet_steps": 80, "pretrain_epochs": 8},
    "paper": {"population": 64, "generations": 128, "supernet_epochs": 30.0, "batch_size": 256},
}


@dataclass
class SearchConfig:
    """Every knob of a search run (CLI flags, --config YAML keys and jcw.search keywords have these names)."""

    model: str = "mobilenet_v2"  # a zoo name, path/to/file.py:factory or package.module:factory
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
    supernet_rule: str = "jcw"
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


def read_config_file(path: str) -> dict:
    """Options from a YAML file (keys = long flag names, dashes or underscores; ``budget`` -> ``budget_ms``)."""
    import yaml

    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as e:
        raise UsageError(f"cannot read config file {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise UsageError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(values, dict):
        raise UsageError(f"config file {path} must be a mapping of option: value")
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    if "budget" in values:
        values["budget_ms"] = values.pop("budget")
    check_names(values, f"config file {path}")
    return values


def check_names(values: dict, where: str) -> None:
    """UsageError naming the options of ``values`` that SearchConfig does not have."""
    unknown = sorted(set(values) - CONFIG_FIELDS)
    if unknown:
        raise UsageError(f"{where}: unknown option(s) {', '.join(unknown)}; "
                         f"accepted: {', '.join(sorted(CONFIG_FIELDS - {'command'}))}")


def build_config(cli: dict, config_file: str | None = None) -> SearchConfig:
    """Defaults <- preset <- YAML file <- explicit values (None means "not given")."""
    from_file = read_config_file(config_file) if config_file is not None else {}
    given = {k: v for k, v in cli.items() if v is not None}
    check_names(given, "search")
    preset = given.get("preset", from_file.get("preset", "quick"))
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; accepted: {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **from_file, **given}
    if values.get("budget_ms") is not None:
        values["budget_ms"] = parse_budget(values["budget_ms"])
    if isinstance(values.get("model"), str):
        from jcw.models.reference import canonical_reference

        values["model"] = canonical_reference(values["model"])  # a file path made absolute: resumable from anywhere
    config = SearchConfig(**values)
    check_config(config)
    return config


def search_bounds(c: SearchConfig) -> Bounds:
    """The gene lower bounds of a run: a preset name (``BOUNDS_PRESETS``: default, jcw), or a mapping
    of rule overrides of the default bounds."""
    if c.bounds is None or isinstance(c.bounds, str):
        name = c.bounds or "default"
        if name not in BOUNDS_PRESETS:
            raise UsageError(f"unknown bounds preset {name!r}; accepted: {', '.join(BOUNDS_PRESETS)}, "
                             f"or a mapping of rule: value in --config")
        return BOUNDS_PRESETS[name]
    if not isinstance(c.bounds, dict):
        raise UsageError(f"bounds must be a preset name ({', '.join(BOUNDS_PRESETS)}) or a mapping of rule: value, "
                         f"got {c.bounds!r}")
    accepted = [f.name for f in dataclasses.fields(Bounds)]
    unknown = sorted(set(c.bounds) - set(accepted))
    if unknown:
        raise UsageError(f"bounds: unknown rule(s) {', '.join(map(str, unknown))}; accepted: {', '.join(accepted)}")
    try:
        return Bounds(**{k: float(v) for k, v in c.bounds.items()})
    except (TypeError, ValueError) as e:
        raise UsageError(f"bounds: {e}") from None


def check_config(c: SearchConfig) -> None:
    """UsageError for any value a run cannot use."""
    from jcw.search.strategies import STRATEGIES
    from jcw.search.supernet import RULES

    search_bounds(c)
    for name in ("population", "generations", "batch_size", "calib_batches", "pretrain_epochs"):
        if not isinstance(getattr(c, name), int) or getattr(c, name) < 1:
            raise UsageError(f"{name} must be a positive integer, got {getattr(c, name)!r}")
    if c.population < 4:
        raise UsageError(f"population must be at least 4, got {c.population}")
    for name in ("supernet_steps", "supernet_warmup_steps", "supernet_sampled"):
        if not isinstance(getattr(c, name), int) or getattr(c, name) < 0:
            raise UsageError(f"{name} must be a non-negative integer, got {getattr(c, name)!r}")
    if c.supernet_rule not in RULES:
        raise UsageError(f"unknown supernet rule {c.supernet_rule!r}; accepted: {', '.join(RULES)}")
    if c.space not in MODES:
        raise UsageError(f"unknown space {c.space!r}; accepted: {', '.join(MODES)}")
    if c.strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {c.strategy!r}; accepted: {', '.join(STRATEGIES)}")
    if c.train_on not in ("cpu", "cuda"):
        raise UsageError(f"--train-on {c.train_on!r}; accepted: cpu, cuda")
    if c.train_on == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--train-on cuda: no CUDA device is available; use --train-on cpu")
