"""jcw: latency-aware joint channel + 4x1-block weight pruning for CNNs on ARM CPUs.

Importing the package must not import torch: the engine and the profiler run on a bare board.  The
torch-side names (``create_model``, ``search``, ``materialize``, ``export_onnx``, ...) load on first use.
"""

__version__ = "0.1.0"

# A source checkout on sys.path (e.g. `python -m jcw.run` from the repository root) shadows the
# installed package, whose directory holds the compiled `_kernels` module. Searching every `jcw`
# directory on sys.path (the standard pkgutil mechanism) lets the checkout find that module.
from pkgutil import extend_path as _extend_path

__path__ = _extend_path(__path__, __name__)

from jcw.core.errors import UsageError  # noqa: E402
from jcw.core.space import Arch, SearchSpace  # noqa: E402

# name -> module that defines it (imported on first access: torch, pymoo and the compiled engine stay unloaded)
_LAZY = {
    "Engine": "jcw.engine",
    "predict_latency": "jcw.api",
    "materialize": "jcw.api",
    "export_onnx": "jcw.api",
    "create_model": "jcw.models",
    "load_model": "jcw.models",
    "list_models": "jcw.models",
    "Candidate": "jcw.search.result",
    "SearchResult": "jcw.search.result",
    "LatencyTable": "latency.lut",
}

__all__ = ["Arch", "SearchSpace", "UsageError", "search", *_LAZY]


def __getattr__(name: str):
    import importlib

    if name == "search":  # the callable jcw.search package: jcw.search(model, ...) is jcw.api.search
        return importlib.import_module("jcw.search")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jcw' has no attribute {name!r}")
