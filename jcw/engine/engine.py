"""Engine: an ONNX model planned once and run whole in C++ (the GIL released for the forward pass)."""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import onnx

from jcw import _kernels, autotune
from jcw.core.errors import UsageError
from jcw.engine.graph import build_graph, load_model

MODES = ("auto", "sparse", "dense")


class LayerPlan(NamedTuple):
    """One planned step: conv/linear layers say whether their packed weights run sparse or dense."""

    name: str
    op: str                 # conv | depthwise | linear | maxpool | avgpool | avgpool2d | add | mul | scale |
                            # concat | act | reshape
    kernel: str | None      # "sparse" or "dense" for conv / depthwise / linear, else None
    density: float | None   # kept 4x1 blocks / all blocks (1.0 when run dense), None for non-weight ops
    act: str                # fused activation: one of jcw.engine.graph.ACTS (none, relu, relu6, hardswish, ...)
    residual: bool          # a residual add is fused into this conv's epilogue
    shape: tuple[int, int, int]
    microkernel: str = ""   # conv / depthwise: kernel variant and microkernel, e.g. "avx512 tile_rows<16,4>"
    copied: int = 0         # concat: inputs copied (the others were written in place by their producers)


def check_input(x, shape: tuple[int, int, int]) -> np.ndarray:
    """Return `x` as a C-contiguous float32 (N, C, H, W) array or raise UsageError saying what is expected."""
    expected = f"(N, {shape[0]}, {shape[1]}, {shape[2]}) float32"
    if not isinstance(x, np.ndarray):
        raise UsageError(f"input must be a numpy array {expected}, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise UsageError(f"input dtype must be float32, got {x.dtype} (use x.astype(np.float32))")
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape) or x.shape[0] < 1:
        raise UsageError(f"input shape must be {expected}, got {tuple(x.shape)}")
    return np.ascontiguousarray(x)


class Engine:
    """Loads an ONNX model (path or ModelProto), folds/fuses/plans it, and runs it through the C++ executor.

    Args:
        model: path to an .onnx file or an ``onnx.ModelProto``.
        threads: worker threads of the engine's pool (1 = single-threaded, the primary target).
        mode: "auto" picks sparse or dense per layer (whichever is faster for its shape and density);
            "sparse" / "dense" force one kernel family (for testing and benchmarking).
    """

    def __init__(self, model: str | os.PathLike | onnx.ModelProto, threads: int = 1, mode: str = "auto"):
        if not isinstance(threads, int) or threads < 1:
            raise UsageError(f"threads must be an integer >= 1, got {threads!r}")
        if mode not in MODES:
            raise UsageError(f"mode must be one of {MODES}, got {mode!r}")
        # The measured kernel variants for this CPU (cached; a short tune on first use): jcw/autotune.py
        autotune.apply_cached(tune_missing=True)
        proto = load_model(model)
        self.metadata = {p.key: p.value for p in proto.metadata_props}
        graph = build_graph(proto)  # not kept: its weights would double the memory of the packed ones
        self.input_name = graph.input_name
        self._input_shape, self._output_shape = graph.input_shape, graph.output_shape
        self.threads = threads
        self.mode = mode
        self._net = _kernels.Network(*graph.input_shape, threads)
        ids = {graph.input_name: 0}
        for step in graph.steps:
            ids[step.output] = self._add(step, ids)
        self._net.set_output(ids[graph.output_name])

    def _add(self, step, ids: dict[str, int]) -> int:
        net, x = self._net, ids[step.inputs[0]]
        act = {"alpha": step.act_alpha, "beta": step.act_beta}
        if step.op == "conv":
            return net.conv(step.name, x, step.weight, step.bias, step.stride, step.pad, step.groups, step.act,
                            self.mode, ids[step.residual] if step.residual else -1, **act)
        if step.op == "linear":
            return net.linear(step.name, x, step.weight, step.bias, step.act, self.mode, **act)
        if step.op == "maxpool":
            return net.max_pool(step.name, x, step.kernel, step.stride, step.pad)
        if step.op == "avgpool":
            return net.global_avg_pool(step.name, x)
        if step.op == "avgpool2d":
            return net.avg_pool(step.name, x, *step.window, step.count_include_pad)
        if step.op == "add":
            return net.add(step.name, x, ids[step.inputs[1]], step.act, **act)
        if step.op == "mul":
            return net.mul(step.name, x, ids[step.inputs[1]])
        if step.op == "concat":
            return net.concat(step.name, [ids[v] for v in step.inputs])
        if step.op == "act":
            return net.act(step.name, x, step.act, **act)
        if step.op == "reshape":
            return net.reshape(step.name, x, *(tuple(step.shape) + (1, 1))[:3])
        raise UsageError(f"internal: no executor op for step '{step.name}' ({step.op})")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Per-image input shape (C, H, W); run() takes (N, C, H, W)."""
        return self._input_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Per-image output shape, e.g. (classes,)."""
        return self._output_shape

    @property
    def plan(self) -> list[LayerPlan]:
        """The executed steps in order, with the kernel (sparse/dense) and density chosen per layer."""
        out = []
        for s in self._net.steps():
            weighted = s["op"] in ("conv", "depthwise", "linear")
            out.append(LayerPlan(s["name"], s["op"], ("sparse" if s["sparse"] else "dense") if weighted else None,
                                 s["density"] if weighted else None, s["act"], s["residual"], s["shape"],
                                 s["microkernel"], s["copied"]))
        return out

    def run(self, x: np.ndarray) -> np.ndarray:
        """Forward pass of a float32 (N, C, H, W) batch; returns (N, *output_shape)."""
        x = check_input(x, self.input_shape)
        y = self._net.run(x)
        return y.reshape((x.shape[0],) + tuple(self.output_shape))

    def benchmark(self, x: np.ndarray, repeats: int = 50, warmup: int = 5) -> np.ndarray:
        """Milliseconds of each of `repeats` timed forward passes (timed in C++) after `warmup` untimed ones."""
        if repeats < 1 or warmup < 0:
            raise UsageError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
        return self._net.benchmark(check_input(x, self.input_shape), int(repeats), int(warmup))

    def profile(self, x: np.ndarray, repeats: int = 20, warmup: int = 3) -> dict[str, float]:
        """Mean milliseconds per step inside whole forward passes of one image, keyed by step name."""
        x = check_input(x, self.input_shape)
        if x.shape[0] != 1:
            raise UsageError(f"profile takes one image (N = 1), got N = {x.shape[0]}")
        if repeats < 1 or warmup < 0:
            raise UsageError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
        ms = self._net.profile(x, int(repeats), int(warmup))
        return {p.name: float(t) for p, t in zip(self.plan, ms)}

    def summary(self) -> str:
        """The plan as a text table."""
        rows = [f"{'layer':<40} {'op':<10} {'kernel':<7} {'density':>7}  {'act':<11} {'res':<3} {'out':<14} microkernel"]
        for p in self.plan:
            dens = f"{p.density:.3f}" if p.density is not None else ""
            name = p.name if len(p.name) <= 40 else "..." + p.name[-37:]
            rows.append(f"{name:<40} {p.op:<10} {p.kernel or '':<7} {dens:>7}  {p.act:<11} "
                        f"{'yes' if p.residual else '':<3} {'x'.join(map(str, p.shape)):<14} {p.microkernel}".rstrip())
        return "\n".join(rows)
