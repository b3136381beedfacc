"""jcw.engine: run ONNX CNNs through the sparse/dense C++ kernels (numpy + onnx only, never torch)."""

from jcw.engine.engine import MODES, Engine, LayerPlan
from jcw.engine.graph import SUPPORTED_OPS
from jcw.core.errors import UsageError
from jcw.engine.timing import time_conv
from jcw.engine.version import ENGINE_VERSION

__all__ = ["ENGINE_VERSION", "MODES", "SUPPORTED_OPS", "Engine", "UsageError", "LayerPlan", "time_conv"]
