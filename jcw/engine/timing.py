"""Per-layer timing for the latency profiler: one conv timed exactly as the engine runs it inside a network."""

from __future__ import annotations

import numpy as np

from jcw import _kernels
from jcw.engine.engine import MODES
from jcw.engine.graph import ACTS
from jcw.core.errors import UsageError


def time_conv(weight: np.ndarray, bias: np.ndarray | None, stride: int, padding: int, groups: int, in_hw,
              act: str = "relu", residual: bool = False, threads: int = 1, repeats: int = 20, warmup: int = 3,
              mode: str = "auto", seed: int = 0) -> np.ndarray:
    """Milliseconds of each of `repeats` runs of one conv layer (timed in C++).

    The layer is packed, dispatched (sparse or dense per `mode`) and fused (bias, activation, optional
    residual add) by the same executor code that runs whole networks, and timed on its planned buffers.

    Args:
        weight: OIHW float32 weights (zeros where pruned); in_channels = weight.shape[1] * groups.
        bias: (out_channels,) or None.
        in_hw: input height and width (int for square, or (h, w)).
        act: fused activation, one of jcw.engine.graph.ACTS (default parameters for hardsigmoid / leaky_relu).
        residual: fuse a residual add of the output's shape into the epilogue.
        seed: seeds the random input (numpy Generator).
    """
    weight = np.ascontiguousarray(weight, dtype=np.float32)
    if weight.ndim != 4:
        raise UsageError(f"weight must be 4-D OIHW, got shape {weight.shape}")
    if act not in ACTS:
        raise UsageError(f"act must be one of {ACTS}, got {act!r}")
    if mode not in MODES:
        raise UsageError(f"mode must be one of {MODES}, got {mode!r}")
    h, w = (in_hw, in_hw) if np.isscalar(in_hw) else tuple(in_hw)
    if bias is not None:
        bias = np.ascontiguousarray(bias, dtype=np.float32)
    rng = np.random.default_rng(seed)
    in_ch = weight.shape[1] * groups
    try:
        net = _kernels.Network(in_ch, int(h), int(w), threads)
        res = -1
        if residual:
            oh = (h + 2 * padding - weight.shape[2]) // stride + 1
            ow = (w + 2 * padding - weight.shape[3]) // stride + 1
            res = net.constant(rng.standard_normal((weight.shape[0], oh, ow), dtype=np.float32))
        out = net.conv("conv", 0, weight, bias, stride, padding, groups, act, mode, res)
        net.set_output(out)
    except ValueError as exc:
        raise UsageError(f"time_conv: {exc}") from None
    x = rng.standard_normal((1, in_ch, int(h), int(w)), dtype=np.float32)
    return net.time_step(0, x, int(repeats), int(warmup))
