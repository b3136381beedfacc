"""`jcw random-prune`: the random channel pruning baseline (sample, rank, reconstruct, fine-tune)."""

from __future__ import annotations

import argparse
import shlex
import sys

from jcw.core.errors import UsageError
from jcw.prune.random_prune import RandomPruneConfig, run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jcw random-prune", description=run.__doc__)
    d = RandomPruneConfig()
    p.add_argument("--model", default=d.model, metavar="REF", help=f"zoo model name (default {d.model}), or your own: "
                   "path/to/file.py:factory or package.module:factory, called as factory(num_classes=N)")
    p.add_argument("--data", default=d.data, help="digits (default), cifar10:PATH, cifar100:PATH or an ImageFolder root")
    p.add_argument("--weights", help="full-model checkpoint (default: pretrain on --data, cached for digits)")
    p.add_argument("--criterion", default=d.criterion, help="channel order: l1 (default), l2, gm, taylor, es, kl, random")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--flops-ratio", type=float, help="target MACs ratio pruned/unpruned (default 0.5)")
    target.add_argument("--budget", help="target latency, e.g. 35ms (needs --device)")
    p.add_argument("--device", help="latency table: a53, a72, host or a table path")
    p.add_argument("--threads", type=int, help="threads of the device table (default 4 for a53/a72, 1 for host)")
    p.add_argument("--lut", help="latency table file to use instead of the device's")
    p.add_argument("--eta", type=float, help="per-layer width ratios are sampled in (eta, 1) (default target - 0.05)")
    p.add_argument("--tolerance", type=float, default=d.tolerance, help=f"T: |ratio - target| <= T (default {d.tolerance})")
    p.add_argument("--samples", type=int, default=d.samples, help=f"N sampled archs (default {d.samples})")
    p.add_argument("--top-k", type=int, default=d.top_k, help=f"archs fine-tuned briefly (default {d.top_k})")
    p.add_argument("--topk-epochs", type=int, default=d.topk_epochs, help=f"epochs per top-k arch (default {d.topk_epochs})")
    p.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs,
                   help=f"epochs for the picked arch (default {d.finetune_epochs}; from scratch: its re-training)")
    p.add_argument("--from-scratch", action="store_true", help="slimmable-network branch: no pretrained weights")
    p.add_argument("--slimmable-epochs", type=int, default=d.slimmable_epochs,
                   help=f"epochs of slimmable training with --from-scratch (default {d.slimmable_epochs})")
    p.add_argument("--pretrain-epochs", type=int, default=d.pretrain_epochs,
                   help=f"epochs of full-model pretraining without --weights (default {d.pretrain_epochs})")
    p.add_argument("--resolution", type=int, help="input size of the data (default: the dataset's); for a model "
                   "outside the zoo also the resolution latency is predicted at (default 224)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"(default {d.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"fine-tuning learning rate (default {d.lr})")
    p.add_argument("--recon-images", type=int, default=d.recon_images,
                   help=f"training images for the least-squares reconstruction (default {d.recon_images})")
    p.add_argument("--criterion-images", type=int, default=d.criterion_images,
                   help=f"training images for data-driven criteria and BN calibration (default {d.criterion_images})")
    p.add_argument("--val-samples", type=int, help="validation images used (default: all)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"data split, pretraining and init seed (default {d.seed})")
    p.add_argument("--sample-seed", type=int, help="seed of the sampling and fine-tuning (default: --seed)")
    p.add_argument("--out", help="run directory (default runs/random-<model>-<target>-<time>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: parse flags -> RandomPruneConfig -> run()."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    values = {k: v for k, v in vars(args).items() if k != "budget"}
    try:
        if args.budget is not None:
            from jcw.core.util import parse_budget
            try:
                values["budget_ms"] = parse_budget(args.budget)
            except UsageError as e:
                raise UsageError(str(e)) from None
        config = RandomPruneConfig(**values, command=shlex.join(["python", "-m", "jcw.random_prune", *argv]))
        result = run(config)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    b = result["best"]
    before = "n/a" if result["full"]["val_acc"] is None else f"{result['full']['val_acc']:.4f}"
    print(f"picked sample {b['index']}: MACs {b['macs'] / 1e6:.2f}M ({b['macs_ratio']:.1%}), params "
          f"{b['params'] / 1e3:.1f}k ({b['params_ratio']:.1%})"
          + (f", predicted {b['latency_ms']:.2f} ms" if "latency_ms" in b else ""))
    print(f"val accuracy: unpruned {before}, before fine-tuning {b['val_acc_before_finetune']:.4f}, "
          f"after fine-tuning {b['val_acc_after_finetune']:.4f}")
    print(f"wrote {result['out']}/result.json, samples.png, model.pt")
    return 0

