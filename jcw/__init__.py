"""jcw: latency-aware joint channel + 4x1-block weight pruning for CNNs on ARM CPUs.

Importing the package must not import torch: the engine and the profiler run on a bare board.
"""

__version__ = "0.1.0"
