"""Side by side with onnxruntime on the same ONNX file: same threads, interleaved timing, output agreement."""

from __future__ import annotations

import time

import numpy as np
import onnx

from jcw.engine.engine import Engine
from jcw.core.errors import UsageError


def ort_session(model: onnx.ModelProto, threads: int = 1):
    """An onnxruntime CPU session with `threads` intra-op threads and all graph optimisations on."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UsageError("onnxruntime is not installed (pip install onnxruntime) but the comparison needs it") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def ort_run(session, x: np.ndarray) -> np.ndarray:
    """Run the session's single input on `x` and return its first output."""
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def timed_pair(engine: Engine, session, x: np.ndarray, repeats: int, warmup: int) -> tuple[np.ndarray, np.ndarray]:
    """Milliseconds per forward pass of the engine (timed in C++) and of onnxruntime (perf_counter around run),
    alternating one run of each so that load changes on the machine hit both alike."""
    feed = {session.get_inputs()[0].name: x}
    for _ in range(warmup):
        engine.run(x)
        session.run(None, feed)
    engine_ms, ort_ms = np.empty(repeats), np.empty(repeats)
    for i in range(repeats):
        engine_ms[i] = engine.benchmark(x, repeats=1, warmup=0)[0]
        t0 = time.perf_counter()
        session.run(None, feed)
        ort_ms[i] = (time.perf_counter() - t0) * 1e3
    return engine_ms, ort_ms


def output_diff(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """(max absolute difference, max absolute difference / max |want|)."""
    if got.shape != want.shape:
        raise UsageError(f"output shapes differ: engine {got.shape}, onnxruntime {want.shape}")
    err = float(np.abs(got.astype(np.float64) - want).max()) if got.size else 0.0
    return err, err / max(float(np.abs(want).max()) if want.size else 0.0, 1e-30)
