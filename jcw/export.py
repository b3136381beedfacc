"""ONNX export of (materialized) zoo models: a clean Conv/Gemm/Add/Relu/Clip/pool graph for the engine."""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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


class ExportError(ValueError):
    """A user mistake in what to export (checkpoint, devices): the CLI prints it and exits 2."""


@dataclass
class ExportConfig:
    """What ``python -m jcw.export CHECKPOINT --onnx FILE`` does; every field is one flag."""

    checkpoint: Path
    onnx: Path
    devices: tuple[str, ...] | None = None
    threads: int | None = None


def predicted_latency(arch, num_classes: int, devices: tuple[str, ...] | None = None,
                      threads: int | None = None) -> tuple[dict[str, float], dict[str, int]]:
    """({device: predicted ms}, {device: threads}) of ``arch`` for every device whose table covers it.

    ``devices`` None: the shipped boards, plus host when its cached table covers the model (never
    profiles); named devices are resolved as the search does (host measured on first use).
    Threads default as in the search: 4 on a board, 1 on the host.
    """
    from jcw.layers import describe
    from jcw.models import create_model
    from latency.devices import SHIPPED, host_table_path, resolve_table
    from latency.lut import LatencyTable, LatencyTableError
    from latency.predictor import Predictor

    spec = describe(create_model(arch.model, num_classes=num_classes), arch.resolution, name=arch.model)
    default_spec = describe(create_model(arch.model), arch.resolution, name=arch.model)
    out_ch = np.array([[c.out_ch for c in arch.layers]])
    in_ch = np.array([[c.in_ch for c in arch.layers]])
    density = np.array([[c.density for c in arch.layers]])
    chosen = devices
    if chosen is None:
        host = host_table_path(threads or 1)
        covered = host.exists() and not LatencyTable.load(host).missing(default_spec)
        chosen = (*SHIPPED, "host") if covered else SHIPPED
    predicted, used = {}, {}
    for device in chosen:
        n = threads or (1 if device == "host" else 4)
        try:
            table = resolve_table(device, arch.model, n, arch.resolution, progress=False)
            if table.missing(spec):  # a table of the zoo's class count: the search predicts with its head
                out = out_ch.copy()
                out[0, -1] = default_spec.layers[-1].out_ch
                ms = Predictor(table, default_spec).predict(out, in_ch, density)
            else:
                ms = Predictor(table, spec).predict(out_ch, in_ch, density)
        except (LatencyTableError, ValueError) as e:
            if devices is not None:
                raise ExportError(f"--devices {device}: {e}") from None
            continue
        name = Path(device).stem if device.endswith(".json") else device
        predicted[name], used[name] = round(float(ms[0]), 4), n
    return predicted, used


def export_checkpoint(config: ExportConfig) -> tuple[Path, dict[str, str]]:
    """A jcw.train model (masks applied, BatchNorm folded) -> ONNX with arch, densities, accuracy, predictions."""
    from jcw.space import Arch
    from jcw.train import TrainError, load_trained

    try:
        model, record = load_trained(config.checkpoint)
    except TrainError as e:
        raise ExportError(str(e)) from None
    arch = Arch.from_dict(record["arch"])
    predicted, threads = predicted_latency(arch, record["num_classes"], config.devices, config.threads)
    metadata = {
        "jcw.arch": arch.to_json(),
        "jcw.densities": json.dumps(record["densities"]),
        "jcw.accuracy": json.dumps(record["accuracy"]),
        "jcw.predicted_ms": json.dumps(predicted),
        "jcw.predicted_threads": json.dumps(threads),
        "jcw.train_data": f"{record['data']} at {record['train_resolution']}px",
    }
    return export_onnx(model, config.onnx, arch.resolution, metadata), metadata


def main(argv: list[str] | None = None) -> int:
    """python -m jcw.export CHECKPOINT --onnx FILE: exit 0, or 2 on bad input."""
    p = argparse.ArgumentParser(prog="python -m jcw.export", description=export_checkpoint.__doc__)
    p.add_argument("checkpoint", type=Path, help="a model.pt written by python -m jcw.train")
    p.add_argument("--onnx", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--devices", help="comma-separated devices to predict latency for: a53, a72, host or a table "
                                     ".json (default: a53, a72, and host when its table is cached)")
    p.add_argument("--threads", type=int, help="threads of every prediction (default: 4 on a board, 1 on the host)")
    a = p.parse_args(argv)
    if a.threads is not None and a.threads < 1:
        p.error(f"--threads must be >= 1, got {a.threads}")
    devices = tuple(d.strip() for d in a.devices.split(",") if d.strip()) if a.devices else None
    try:
        path, metadata = export_checkpoint(ExportConfig(a.checkpoint, a.onnx, devices, a.threads))
    except ExportError as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    print(f"wrote {path}\npredicted latency (ms): {metadata['jcw.predicted_ms']}\n"
          f"accuracy: {metadata['jcw.accuracy']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
