"""End-to-end on the embedded digits: quick search -> short ADMM training -> ONNX export -> jcw engine vs prediction."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from jcw.engine import Engine
from jcw.engine.compare import ort_session, timed_pair
from jcw.export import ExportConfig, export_checkpoint, export_onnx
from jcw.layers import describe
from jcw.models import create_model, default_resolution
from jcw.core.util import write_json
from jcw.search.config import build_config
from jcw.search.runner import run_search
from jcw.train.stages import MODEL, TrainConfig, train
from jcw.train.loops import evaluate, ordered_batches, pretrained_path
from latency.devices import resolve_table
from latency.predictor import Predictor


@dataclass
class EndToEndConfig:
    """Every flag of ``python benchmarks/end_to_end.py``."""

    model: str = "resnet20"
    budget_fraction: float = 0.5
    train_resolution: int = 16
    epochs_dense: int = 3
    epochs_admm: int = 6
    epochs_finetune: int = 3
    rho: float = 0.1  # a short run: JCW's 0.01 leaves ~18% of the energy outside the mask after 6 epochs
    lr: float = 0.05
    threads: int = 1
    repeats: int = 200
    seed: int = 0
    out: Path = Path("runs/end_to_end")
    json_path: Path | None = None
    quiet: bool = False


def _time_files(paths: dict[str, Path], threads: int, repeats: int, seed: int) -> dict[str, dict[str, float]]:
    """Median engine and onnxruntime ms per ONNX file, timed interleaved on one seeded image."""
    times = {}
    for name, path in paths.items():
        proto = onnx.load(str(path))
        engine = Engine(proto, threads=threads)
        x = np.random.default_rng(seed).standard_normal((1, *engine.input_shape), dtype=np.float32)
        engine_ms, ort_ms = timed_pair(engine, ort_session(proto, threads), x, repeats, max(5, repeats // 10))
        times[name] = {"engine_ms": float(np.median(engine_ms)), "ort_ms": float(np.median(ort_ms))}
    return times


def run(config: EndToEndConfig) -> dict:
    """Runs the four steps in ``config.out``; returns every number the report prints."""
    torch.set_num_threads(config.threads)  # training too: the timed runs below use this many threads
    resolution = default_resolution(config.model)
    table = resolve_table("host", config.model, config.threads, resolution, progress=not config.quiet)
    full_ms = Predictor(table, describe(create_model(config.model), resolution, name=config.model)).full()
    budget = round(config.budget_fraction * full_ms, 3)

    search_dir = run_search(build_config({
        "model": config.model, "device": "host", "threads": config.threads, "budget_ms": budget, "preset": "quick",
        "train_resolution": config.train_resolution, "seed": config.seed, "out": str(config.out / "search"),
        "quiet": config.quiet, "command": "benchmarks/end_to_end.py"}))
    front = json.loads((search_dir / "front.json").read_text())
    weights = pretrained_path(config.model, front["data"], front["train_resolution"], config.seed,
                              build_config({}).pretrain_epochs)

    result = train(TrainConfig(
        result=search_dir / "front.json", pick=f"{budget}ms", data=front["data"], weights=weights,
        epochs_dense=config.epochs_dense, epochs_admm=config.epochs_admm, epochs_finetune=config.epochs_finetune,
        rho=config.rho, lr=config.lr, out=config.out / "train", seed=config.seed, quiet=config.quiet))

    pruned_onnx, metadata = export_checkpoint(ExportConfig(config.out / "train" / MODEL, config.out / "pruned.onnx",
                                                           devices=("host",), threads=config.threads))
    predicted = json.loads(metadata["jcw.predicted_ms"])["host"]

    from jcw.data import load_dataset

    data = load_dataset(front["data"], resolution=front["train_resolution"], seed=config.seed)
    full = create_model(config.model, num_classes=data.num_classes)
    full.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    full_acc = evaluate(full, ordered_batches(data.val, 256))[1]
    unpruned_onnx = export_onnx(full.eval(), config.out / "unpruned.onnx", resolution,
                                {"jcw.predicted_ms": json.dumps({"host": full_ms})})

    times = _time_files({"unpruned": unpruned_onnx, "pruned": pruned_onnx}, config.threads, config.repeats,
                        config.seed)
    return {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "budget_ms": budget, "search_dir": str(search_dir),
        "accuracy": {"unpruned": full_acc, **result.accuracy},
        "energy_outside_after_admm": result.energy_outside,
        "predicted_ms": {"unpruned": full_ms, "pruned": predicted},
        "times": times,
    }


def report(r: dict) -> str:
    """The result as markdown tables plus the two pass/fail checks."""
    acc, pred, t = r["accuracy"], r["predicted_ms"], r["times"]
    err = 100 * (t["pruned"]["engine_ms"] - pred["pruned"]) / pred["pruned"]
    lines = [
        f"budget {r['budget_ms']:.3f} ms on the host table ({r['config']['threads']} thread(s)); "
        f"search run {r['search_dir']}",
        "",
        "| stage | val accuracy (digits) |",
        "|---|---|",
        f"| unpruned {r['config']['model']} (pretrained by the search) | {acc['unpruned']:.4f} |",
        f"| picked arch, dense (channel-pruned) | {acc['dense']:.4f} |",
        f"| after ADMM, mask applied, before fine-tuning | {acc['pruned']:.4f} |",
        f"| after masked fine-tuning | {acc['finetuned']:.4f} |",
        "",
        f"weight energy outside the 4x1 mask after ADMM: {r['energy_outside_after_admm']:.4f}",
        "",
        "| model | predicted host ms | jcw engine ms | error | onnxruntime ms |",
        "|---|---|---|---|---|",
    ]
    for name in ("unpruned", "pruned"):
        e = 100 * (t[name]["engine_ms"] - pred[name]) / pred[name]
        lines.append(f"| {name} | {pred[name]:.3f} | {t[name]['engine_ms']:.3f} | {e:+.1f}% "
                     f"| {t[name]['ort_ms']:.3f} |")
    lines += [
        "",
        f"pruned engine latency within 10% of its prediction: {'yes' if abs(err) <= 10 else 'NO'} ({err:+.1f}%)",
        f"pruned faster than unpruned on onnxruntime: "
        f"{'yes' if t['pruned']['ort_ms'] < t['unpruned']['ort_ms'] else 'NO'} "
        f"({t['unpruned']['ort_ms'] / t['pruned']['ort_ms']:.2f}x)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/end_to_end.py", description=__doc__)
    d = EndToEndConfig()
    p.add_argument("--model", default=d.model, help=f"zoo model (default {d.model})")
    p.add_argument("--budget-fraction", type=float, default=d.budget_fraction,
                   help="latency budget as a fraction of the unpruned model's predicted host latency")
    p.add_argument("--train-resolution", type=int, default=d.train_resolution,
                   help="image size the search and training use (the digits are 8x8; latency is at the model's own)")
    p.add_argument("--epochs-dense", type=int, default=d.epochs_dense)
    p.add_argument("--epochs-admm", type=int, default=d.epochs_admm)
    p.add_argument("--epochs-finetune", type=int, default=d.epochs_finetune)
    p.add_argument("--rho", type=float, default=d.rho)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--threads", type=int, default=d.threads,
                   help="threads of torch, the engine, onnxruntime and the table")
    p.add_argument("--repeats", type=int, default=d.repeats, help="timed runs per file")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", type=Path, default=d.out, help="working directory (search run, training, .onnx files)")
    p.add_argument("--json", type=Path, dest="json_path", help="also write the numbers as JSON here")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if not 0 < a.budget_fraction <= 1:
        p.error(f"--budget-fraction must be in (0, 1], got {a.budget_fraction}")
    config = EndToEndConfig(**vars(a))
    r = run(config)
    print(report(r))
    if config.json_path is not None:
        write_json(config.json_path, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
