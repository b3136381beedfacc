"""ONNX export of (materialized) zoo models: a clean graph of the ops jcw.engine runs (ENGINE_OPS)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from onnxscript import opset18 as op
from torch import nn
from jcw.core.errors import UsageError
from jcw.core.util import atomic_write, default_threads, device_name

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# Operators a zoo model may export to (what jcw.engine executes).
# torch 2.13's exporter (opset 20) emits nn.Hardswish / nn.Hardsigmoid / nn.Sigmoid / nn.LeakyReLU /
# nn.GELU as the ONNX ops of those names, nn.SiLU as Sigmoid + Mul, torch.cat as Concat, x * s as Mul,
# nn.AvgPool2d as AveragePool and x.mean((2, 3), keepdim=True) as ReduceMean: all run by the engine.
ENGINE_OPS = frozenset({"Conv", "Gemm", "MatMul", "Add", "Mul", "Concat", "Relu", "Clip", "Sigmoid", "HardSigmoid",
                        "HardSwish", "LeakyRelu", "Gelu", "GlobalAveragePool", "ReduceMean", "AveragePool",
                        "Flatten", "Reshape", "MaxPool", "BatchNormalization"})


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
    return atomic_write(path, proto.SerializeToString())


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata_props of an ONNX file as a dict of strings."""
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


@dataclass
class ExportConfig:
    """What ``python -m jcw.export CHECKPOINT --onnx FILE`` does; every field is one flag."""

    checkpoint: Path
    onnx: Path
    devices: tuple[str, ...] | None = None
    threads: int | None = None
    model: str | None = None  # a model reference; default: the one the checkpoint records


def predicted_latency(arch, num_classes: int, devices: tuple[str, ...] | None = None,
                      threads: int | None = None, spec=None) -> tuple[dict[str, float], dict[str, int]]:
    """({device: predicted ms}, {device: threads}) of ``arch`` for every device whose table covers it.

    ``devices`` None: the shipped boards, plus host when its cached table covers the model (never
    profiles); named devices are resolved as the search does (host measured on first use).
    Threads default as in the search: 4 on a board, 1 on the host.  ``spec``: the NetSpec of the full
    model (default: the shipped spec of the arch's zoo model).
    """
    from jcw.core.netspec import load_shipped
    from latency.devices import SHIPPED, host_table_path, resolve_table
    from latency.lut import LatencyTable
    from latency.predictor import predictor_for

    if spec is None:
        spec = load_shipped(arch.model).at_resolution(arch.resolution)
    spec = spec.with_classes(num_classes)
    chosen = devices
    if chosen is None:
        host = host_table_path(threads or default_threads("host"))
        covered = host.exists() and not LatencyTable.load(host).missing(spec)
        chosen = (*SHIPPED, "host") if covered else SHIPPED
    predicted, used = {}, {}
    for device in chosen:
        n = threads or default_threads(device)
        try:
            table = resolve_table(device, spec.model, n, arch.resolution, progress=False, spec=spec)
            ms = predictor_for(table, spec).predict_arch(arch)
        except ValueError as e:
            if devices is not None:
                raise UsageError(f"--devices {device}: {e}") from None
            continue
        predicted[device_name(device)], used[device_name(device)] = round(ms, 4), n
    return predicted, used


def _full_spec(model_ref: str, arch, num_classes: int):
    """The NetSpec of the full model ``model_ref`` at the arch's resolution: a zoo model's shipped spec,
    or the description of a freshly built model outside the zoo (named as the arch names it)."""
    from jcw.core.netspec import load_shipped, shipped_models
    from jcw.layers import describe
    from jcw.models import load_model

    if model_ref in shipped_models():
        return load_shipped(model_ref).at_resolution(arch.resolution)
    return describe(load_model(model_ref, num_classes), arch.resolution, name=arch.model)


def export_checkpoint(config: ExportConfig) -> tuple[Path, dict[str, str]]:
    """A jcw.train model (masks applied, BatchNorm folded) -> ONNX with arch, densities, accuracy, predictions."""
    from jcw.core.space import Arch
    from jcw.train.stages import load_trained

    try:
        model, record = load_trained(config.checkpoint, config.model)
    except UsageError as e:
        raise UsageError(str(e)) from None
    arch = Arch.from_dict(record["arch"])
    predicted, threads = predicted_latency(arch, record["num_classes"], config.devices, config.threads,
                                           _full_spec(record["model_ref"], arch, record["num_classes"]))
    metadata = {
        "jcw.arch": arch.to_json(),
        "jcw.densities": json.dumps(record["densities"]),
        "jcw.accuracy": json.dumps(record["accuracy"]),
        "jcw.predicted_ms": json.dumps(predicted),
        "jcw.predicted_threads": json.dumps(threads),
        "jcw.train_data": f"{record['data']} at {record['train_resolution']}px",
        "jcw.model": record["model_ref"],
    }
    return export_onnx(model, config.onnx, arch.resolution, metadata), metadata
