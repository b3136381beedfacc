"""`jcw export`: a trained model.pt -> ONNX with the arch, accuracy and predicted latencies in its metadata."""

from __future__ import annotations

import argparse
from pathlib import Path

from jcw.core.errors import UsageError
from jcw.export import ExportConfig, export_checkpoint


def main(argv: list[str] | None = None) -> int:
    """jcw export CHECKPOINT --onnx FILE: exit 0, or 2 on bad input."""
    p = argparse.ArgumentParser(prog="jcw export", description=export_checkpoint.__doc__)
    p.add_argument("checkpoint", type=Path, help="a model.pt written by python -m jcw.train")
    p.add_argument("--onnx", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--devices", help="comma-separated devices to predict latency for: a53, a72, host or a table "
                                     ".json (default: a53, a72, and host when its table is cached)")
    p.add_argument("--threads", type=int, help="threads of every prediction (default: 4 on a board, 1 on the host)")
    p.add_argument("--model", metavar="REF", help="the full model: a zoo name, path/to/file.py:factory or "
                                                  "package.module:factory (default: the one the checkpoint records)")
    a = p.parse_args(argv)
    if a.threads is not None and a.threads < 1:
        p.error(f"--threads must be >= 1, got {a.threads}")
    devices = tuple(d.strip() for d in a.devices.split(",") if d.strip()) if a.devices else None
    try:
        path, metadata = export_checkpoint(ExportConfig(a.checkpoint, a.onnx, devices, a.threads, a.model))
    except UsageError as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    print(f"wrote {path}\npredicted latency (ms): {metadata['jcw.predicted_ms']}\n"
          f"accuracy: {metadata['jcw.accuracy']}")
    return 0

