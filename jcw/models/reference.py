"""Model references: ``NAME`` (the zoo), ``path/to/file.py:factory`` or ``package.module:factory``.

``load_model(ref, num_classes)`` builds the model a reference names and tags it with the reference
(``model_reference(model)``), so that a search, its front.json / best.json and a training checkpoint
can record which model they came from and train / export can rebuild it without ``--model``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

import torch
from torch import nn

from jcw.core.errors import UsageError
from jcw.models.registry import create_model, default_resolution, list_models, zoo_name

DEFAULT_RESOLUTION = 224  # deployment resolution of a model outside the zoo when none is given
FORMS = "path/to/file.py:factory or package.module:factory (factory(num_classes=N) returns an nn.Module)"
_TAG = "jcw_reference"  # attribute of a model made by load_model: its canonical reference


def _zoo() -> list[str]:
    return list_models()


def _split(ref: str) -> tuple[str, str] | None:
    """(file or module, factory) of ``X:factory``; None for a bare name."""
    ref = str(ref).strip()
    if ":" not in ref:
        return None
    target, _, attr = ref.rpartition(":")
    if not target or not attr:
        raise UsageError(f"model {ref!r}: expected a zoo name or {FORMS}")
    return target, attr


def _is_file(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def canonical_reference(ref: str) -> str:
    """``ref`` with a file path made absolute (resolved against the current directory), so the
    reference rebuilds the model from any working directory.  Zoo names and modules are unchanged."""
    ref = str(ref).strip()
    parts = _split(ref)
    if parts is None or not _is_file(parts[0]):
        return ref
    return f"{Path(parts[0]).expanduser().resolve()}:{parts[1]}"


def model_label(ref: str) -> str:
    """A short name for a reference (the NetSpec / Arch ``model`` field, run directory names, caches):
    the zoo name itself, else ``<file stem or last module part>.<factory>`` (never a zoo name)."""
    parts = _split(ref)
    if parts is None:
        return str(ref).strip()
    target, attr = parts
    stem = Path(target).stem if _is_file(target) else target.rpartition(".")[2]
    return f"{stem}.{attr}"


def model_reference(model: nn.Module) -> str | None:
    """The reference that rebuilds ``model``: the one ``load_model`` tagged it with, its zoo name, else the
    ``module:qualname`` of its class when that is importable (not ``__main__``, not a local class), else None."""
    tagged = getattr(model, _TAG, None)
    if isinstance(tagged, str):
        return tagged
    name = zoo_name(model)
    if name is not None:
        return name
    cls = type(model)
    module, qualname = cls.__module__, cls.__qualname__
    if module in ("__main__", "builtins") or "<locals>" in qualname or module.startswith("torch."):
        return None
    try:
        found = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except Exception:  # noqa: BLE001 - any failure means "not importable"
        return None
    return f"{module}:{qualname}" if found is cls else None


def model_name(model: nn.Module) -> str:
    """The short name of ``model``: its zoo name, the label of its reference, else its class name in lower case."""
    tagged = getattr(model, _TAG, None)
    return zoo_name(model) or (model_label(tagged) if isinstance(tagged, str) else type(model).__name__.lower())


def deploy_resolution(ref_or_model, resolution: int | None = None) -> int:
    """``resolution`` when given, else the zoo model's own, else DEFAULT_RESOLUTION (224)."""
    if resolution:
        return int(resolution)
    name = ref_or_model if isinstance(ref_or_model, str) else zoo_name(ref_or_model)
    return default_resolution(name) if name in _zoo() else DEFAULT_RESOLUTION


@contextlib.contextmanager
def _on_path(directory: str | None):
    """``directory`` first on sys.path for the duration (sibling imports of a model file), then removed."""
    if directory is None:
        yield
        return
    sys.path.insert(0, directory)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(directory)


def _import_file(path: Path, ref: str):
    if not path.is_file():
        raise UsageError(f"model {ref!r}: no such file {path}; accepted: a zoo name ({', '.join(_zoo())}) or {FORMS}")
    name = "jcw_user_model_" + hashlib.sha256(str(path).encode()).hexdigest()[:12] + "_" + \
        "".join(c if c.isalnum() else "_" for c in path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"model {ref!r}: {path} cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses, pickling and typing look classes up by module name
    try:
        spec.loader.exec_module(module)
    except BaseException as e:
        sys.modules.pop(name, None)
        if isinstance(e, KeyboardInterrupt):
            raise
        raise UsageError(f"model {ref!r}: importing {path} failed ({type(e).__name__}: {e})") from None
    return module


def _import_module(target: str, ref: str):
    try:
        return importlib.import_module(target)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        hint = f"; accepted: a zoo name ({', '.join(_zoo())}) or {FORMS}" if isinstance(e, ImportError) else ""
        local = Path(target.replace(".", "/") + ".py")
        if isinstance(e, ModuleNotFoundError) and local.is_file():
            hint = f"; {local} is a file here: name it by its path, {local}:{ref.rpartition(':')[2]}"
        raise UsageError(f"model {ref!r}: cannot import module {target!r} ({type(e).__name__}: {e}){hint}") from None


def _factory(module, attr: str, where: str, ref: str):
    found = module
    for part in attr.split("."):
        if not hasattr(found, part):
            defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                             and getattr(v, "__module__", None) == module.__name__)
            raise UsageError(f"model {ref!r}: {where} has no attribute {attr!r}; it defines: "
                             f"{', '.join(defined) or 'no public functions or classes'}")
        found = getattr(found, part)
    if not callable(found):
        raise UsageError(f"model {ref!r}: {where}:{attr} is a {type(found).__name__}, not callable; a factory is a "
                         "function or class called as factory(num_classes=N) that returns an nn.Module")
    return found


def load_model(ref: str, num_classes: int | None = None, seed: int | None = None) -> nn.Module:
    """The model ``ref`` names, freshly built, tagged with its canonical reference.

    ``ref``: a zoo name (``create_model``), ``path/to/file.py:factory`` (the file is imported by path; its
    directory is on sys.path only while it is imported and the factory runs) or ``package.module:factory``.
    The factory is called as ``factory(num_classes=num_classes)``, or ``factory()`` when ``num_classes`` is
    None.  ``seed``: draw the initial weights from torch's generator seeded with it (the global RNG state
    is restored afterwards), so the same seed builds the same weights; None: from the current state.
    Every problem raises UsageError naming it and what is accepted.
    """
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return load_model(ref, num_classes)
    ref = canonical_reference(ref)
    parts = _split(ref)
    if parts is None:
        if ref not in _zoo():
            hint = f"; a file needs its factory: {ref}:FACTORY" if ref.endswith(".py") else ""
            raise UsageError(f"unknown model {ref!r}; known models: {', '.join(_zoo())}; a model of your own: "
                             f"{FORMS}{hint}")
        model = create_model(ref, num_classes)
        setattr(model, _TAG, ref)
        return model
    target, attr = parts
    if _is_file(target):
        path = Path(target)
        directory, where = str(path.parent), str(path)
        with _on_path(directory):
            module = _import_file(path, ref)
            factory = _factory(module, attr, where, ref)
            model = _call(factory, attr, num_classes, ref)
    else:
        module = _import_module(target, ref)
        model = _call(_factory(module, attr, target, ref), attr, num_classes, ref)
    setattr(model, _TAG, ref)
    return model


def _call(factory, attr: str, num_classes: int | None, ref: str) -> nn.Module:
    kwargs = {} if num_classes is None else {"num_classes": int(num_classes)}
    shown = f"{attr}({', '.join(f'{k}={v}' for k, v in kwargs.items())})"
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError:
        raise UsageError(f"model {ref!r}: {attr}{_signature(factory)} cannot be called as {shown}; jcw calls the "
                         "factory with the class count of the data as num_classes=N") from None
    except ValueError:  # no signature (a builtin): just call it
        pass
    try:
        model = factory(**kwargs)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        raise UsageError(f"model {ref!r}: {shown} failed ({type(e).__name__}: {e})") from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"model {ref!r}: {shown} returned a {type(model).__name__}, not a torch nn.Module")
    return model


def _signature(factory) -> str:
    try:
        return str(inspect.signature(factory))
    except (TypeError, ValueError):
        return "(...)"
