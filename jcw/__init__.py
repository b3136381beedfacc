"""jcw: latency-aware joint channel + 4x1-block weight pruning for CNNs on ARM CPUs.

Importing the package must not import torch: the engine and the profiler run on a bare board.
"""

__version__ = "0.1.0"

# A source checkout on sys.path (e.g. `python -m jcw.run` from the repository root) shadows the
# installed package, whose directory holds the compiled `_kernels` module. Searching every `jcw`
# directory on sys.path (the standard pkgutil mechanism) lets the checkout find that module.
from pkgutil import extend_path as _extend_path

__path__ = _extend_path(__path__, __name__)
