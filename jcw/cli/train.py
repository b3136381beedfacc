"""`jcw train` / `python -m jcw.train`: dense training, ADMM toward the 4x1 block pattern, masked fine-tuning."""

from __future__ import annotations

import argparse
from pathlib import Path

from jcw.core.errors import UsageError
from jcw.train.distributed import init_distributed, shutdown
from jcw.train.stages import TrainConfig, train


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jcw train", description=train.__doc__)
    src = p.add_argument_group("what to train")
    src.add_argument("--result", type=Path, help="a search's RUN_DIR/front.json (with --pick)")
    src.add_argument("--pick", help="latency budget: the most accurate front candidate within it, e.g. 35ms; or "
                                    "best: the most accurate within the search's own budget")
    src.add_argument("--arch", type=Path, help="an arch JSON (e.g. RUN_DIR/best.json) instead of --result/--pick")
    src.add_argument("--model", metavar="REF", help="the full model: a zoo name, path/to/file.py:factory or "
                                                    "package.module:factory (default: the one the search recorded)")
    src.add_argument("--data", default=TrainConfig.data, help="digits (embedded), cifar10:PATH, cifar100:PATH "
                                                              "or an image-folder root (default: digits)")
    init = src.add_mutually_exclusive_group()
    init.add_argument("--weights", type=Path, help="full-model weights (zoo or torchvision keys), materialized")
    init.add_argument("--from-scratch", action="store_true", help="start from random initialisation")
    t = p.add_argument_group("training")
    t.add_argument("--epochs-dense", type=int, default=TrainConfig.epochs_dense)
    t.add_argument("--epochs-admm", type=int, default=TrainConfig.epochs_admm)
    t.add_argument("--epochs-finetune", type=int, default=TrainConfig.epochs_finetune)
    t.add_argument("--rho", type=float, default=TrainConfig.rho, help="ADMM penalty (default 0.01, constant)")
    t.add_argument("--lr", type=float, default=TrainConfig.lr, help="initial SGD learning rate of every stage "
                                                                   "(cosine to 0 within the stage)")
    t.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, help="global batch (all processes)")
    t.add_argument("--train-on", choices=("cpu", "cuda"), default=TrainConfig.train_on)
    t.add_argument("--seed", type=int, default=TrainConfig.seed)
    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, default=TrainConfig.out, help="run directory (last.pt, model.pt)")
    o.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    o.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    config = TrainConfig(**{k: v for k, v in vars(args).items()})
    try:
        ctx = init_distributed(config.train_on)
    except ValueError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    try:
        result = train(config, ctx)
    except UsageError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    finally:
        shutdown(ctx)
    if ctx.is_main:
        acc = "  ".join(f"{k} {v:.4f}" for k, v in result.accuracy.items())
        print(f"accuracy: {acc}\nenergy outside the mask after ADMM: {result.energy_outside:.4f}\n"
              f"saved {result.model_path}")
    return 0

