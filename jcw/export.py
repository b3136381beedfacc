"""ONNX export of (materialized) zoo models: a clean Conv/Gemm/Add/Relu/Clip/pool graph for the engine."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import onnx
import torch
from onnxscript import opset18 as op
from torch import nn

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# Operators a zoo model may export to (what jcw.engine executes).
ENGINE_OPS = frozenset({"Conv", "Gemm", "MatMul", "Add", "Relu", "Clip", "GlobalAveragePool", "Flatten",
                        "Reshape", "MaxPool", "BatchNormalization"})


def _global_avg_pool(x, output_size):
    """aten.adaptive_avg_pool2d -> ONNX GlobalAveragePool (instead of the default ReduceMean)."""
    if list(output_size) != [1, 1]:
        raise ValueError(f"only adaptive average pooling to 1x1 can be exported, got {list(output_size)}")
    return op.GlobalAveragePool(x)


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's progress prints, warnings and log lines (e.g. about torchvision ops)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(model: nn.Module, path: str | os.PathLike, resolution: int,
                metadata: dict | None = None) -> Path:
    """Write ``model`` (eval mode, float32, input "input" of shape (1, 3, r, r), output "logits") to ``path``.

    Uses torch.onnx's dynamo exporter (BatchNorm folded into Conv by its optimizer) with global
    average pooling kept as GlobalAveragePool.  ``metadata`` goes into the ONNX metadata_props
    (non-string values as JSON).  The file is written atomically.
    """
    path = Path(path)
    net = copy.deepcopy(model).float().eval()
    x = torch.zeros(1, 3, int(resolution), int(resolution))
    with _quiet_exporter():
        program = torch.onnx.export(
            net, (x,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamo=True, verbose=False,
            custom_translation_table={torch.ops.aten.adaptive_avg_pool2d.default: _global_avg_pool})
    proto = program.model_proto
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), value if isinstance(value, str) else json.dumps(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(proto.SerializeToString())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata_props of an ONNX file as a dict of strings."""
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
