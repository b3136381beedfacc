"""Small shared helpers: atomic file writes, the latency-budget syntax, device names and default threads."""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path

from jcw.core.errors import UsageError

_BUDGET = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s)?\s*$")


def atomic_write(path, text: str | bytes) -> Path:
    """Write ``text`` (str, or bytes written as they are) to ``path`` atomically (temp file in the same folder
    + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path, obj) -> Path:
    """Atomic JSON write (indent 1, trailing newline)."""
    return atomic_write(path, json.dumps(obj, indent=1) + "\n")


def parse_budget(text) -> float:
    """Latency in ms from ``35ms``, ``35 ms``, ``0.035s`` or a bare number (ms); UsageError otherwise."""
    match = _BUDGET.match(str(text))
    if not match:
        raise UsageError(f"budget {text!r} is not a latency; use e.g. 35ms, '35 ms', 0.035s or 35 (ms)")
    value = float(match.group(1)) * (1000.0 if match.group(2) == "s" else 1.0)
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"budget {text!r} must be a positive latency, e.g. 35ms")
    return value


def default_threads(device: str | None) -> int:
    """Threads a device's table is taken at when none are given: 1 on ``host`` (measured here), else 4."""
    return 1 if device == "host" else 4


def device_name(device: str) -> str:
    """Short name of a device argument: ``a53``, ``host``, or the file stem of a table path."""
    device = str(device)
    return Path(device).stem if os.sep in device or device.endswith(".json") else device
