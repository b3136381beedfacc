"""Full-model weight files (``--weights``): our zoo keys = torchvision keys, loaded into a fresh zoo model."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from jcw.core.errors import UsageError


def read_torch(path: str | Path, error: type[Exception], unreadable: str, what: str = ""):
    """``torch.load(path)`` on the CPU (tensors and plain containers only); a missing file or one torch
    cannot read raises ``error`` with ``{what}{path}: no such file`` or ``{what}{path}: {unreadable} (...)``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise error(f"{what}{path}: no such file") from None
    except Exception as e:  # torch raises several unrelated types for a file that is not a checkpoint
        raise error(f"{what}{path}: {unreadable} ({type(e).__name__}: {e})") from None


def load_weights(model: nn.Module, path: str | Path, classifier: str) -> None:
    """Load a full-model checkpoint into ``model`` in place.

    Accepts a bare state dict or one under a ``state_dict`` entry, and strips DataParallel ``module.``
    prefixes. The ``classifier`` layer (its weight and bias) may have another class count: it then
    keeps its fresh initialisation. Any other mismatch raises UsageError.
    """
    state = read_torch(path, UsageError, "not a readable torch checkpoint", what="--weights ")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"--weights {path}: expected a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    head = {f"{classifier}.weight", f"{classifier}.bias"}
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape and k not in head]
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if wrong or unexpected or missing:
        raise UsageError(f"--weights {path} does not fit {model.__class__.__name__}: "
                              f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]}")
    keep = {k: v for k, v in state.items() if not (k in head and own[k].shape != v.shape)}
    model.load_state_dict(keep, strict=False)
