"""`jcw search` / `python -m jcw.search`: latency-aware joint channel + weight pruning search."""

from __future__ import annotations

import argparse
import shlex
import sys

from jcw.core.errors import UsageError
from jcw.core.space import BOUNDS_PRESETS
from jcw.search.config import PRESETS, SearchConfig, build_config


def build_parser(prog: str = "jcw search") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split(": ", 1)[1])
    add = parser.add_argument
    add("--config", metavar="FILE.yaml", help="YAML file of options (keys = long flag names)")
    add("--model", metavar="REF", help="zoo model name (default mobilenet_v2), or your own: path/to/file.py:factory "
        "or package.module:factory, called as factory(num_classes=N) with the data's class count")
    add("--device", help="a53 | a72 | host | path to a latency table (default a53)")
    add("--lut", metavar="FILE", help="latency table file to use instead of the device's shipped one")
    add("--budget", help="latency budget: 35ms, '35 ms', 0.035s, or a bare number of ms")
    add("--data", help="digits (default, embedded) | IMAGEFOLDER_ROOT | cifar10:PATH | cifar100:PATH")
    add("--weights", metavar="FILE", help="full-model checkpoint (torchvision keys accepted); default: pretrain")
    add("--criterion", help="channel importance order (default l1)")
    add("--space", choices=["joint", "channel", "weight"], help="joint (default), channel-only, weight-only")
    add("--bounds", help=f"gene lower bounds preset: {' | '.join(BOUNDS_PRESETS)} (default: default; jcw = JCW's "
        "ResNet18 values); rule overrides go in --config as a `bounds:` mapping")
    add("--strategy", help="search strategy: nsga2 (default) | random")
    add("--threads", type=int, help="which table of the device: default 4 for a53/a72, 1 for host")
    add("--population", type=int, help="population size (quick 8, paper 64)")
    add("--generations", type=int, help="generations (quick 6, paper 128)")
    add("--supernet-steps", type=int, help="supernet training steps per generation (quick 80)")
    add("--supernet-rule", help="candidates per supernet step: jcw (default: one sampled member of the scored "
        "set) | sandwich (largest + smallest + sampled, distilled from the largest)")
    add("--preset", choices=list(PRESETS), help="quick (default) | paper (64 x 128, JCW schedule)")
    add("--resolution", type=int, help="deployment resolution the latency table is queried at (default: the zoo "
        "model's; 224 for a model outside the zoo)")
    add("--train-resolution", type=int, help="input size of the accuracy proxy (dataset default)")
    add("--train-on", choices=["cpu", "cuda"], help="where the supernet trains (default cpu)")
    add("--torch-threads", type=int, help="CPU threads torch trains with (default 1: fastest on a shared machine)")
    add("--seed", type=int, help="seed of everything random (default 0)")
    add("--out", metavar="DIR", help="run directory (default runs/<model>-<device>-<budget>-<time>/)")
    add("--resume", action="store_true", default=None, help="continue the run in --out from its checkpoint")
    add("--quiet", action="store_true", default=None, help="no progress bars or per-generation lines")
    return parser


def parse_args(argv=None, prog: str = "jcw search") -> SearchConfig:
    """The SearchConfig of a command line; a bad value exits 2 with argparse's usage message."""
    parser = build_parser(prog)
    args = vars(parser.parse_args(argv))
    config_file = args.pop("config")
    args["budget_ms"] = args.pop("budget")
    args["command"] = shlex.join(["python", "-m", "jcw.search", *(sys.argv[1:] if argv is None else argv)])
    try:
        return build_config(args, config_file)
    except UsageError as e:
        parser.error(str(e))


def main(argv=None, prog: str = "jcw search") -> int:
    from jcw.search.runner import run_search
    from jcw.train.distributed import init_distributed, shutdown

    config = parse_args(argv, prog)
    dist = init_distributed(config.train_on)
    try:
        run_search(config, dist)
    except UsageError as e:
        if dist.is_main:
            print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if dist.is_main:
            print(f"{prog}: interrupted; continue with --resume --out RUN_DIR", file=sys.stderr)
        return 130
    finally:
        shutdown(dist)
    return 0
