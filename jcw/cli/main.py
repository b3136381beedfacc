"""`jcw`: one command, one subcommand per pipeline stage (each the same parser as its own CLI)."""

from __future__ import annotations

import importlib
import sys

from jcw.core.errors import UsageError

# subcommand -> (module with main(argv), what it does)
COMMANDS = {
    "search": ("jcw.cli.search", "latency-aware joint channel + weight pruning search (NSGA-II + supernet)"),
    "train": ("jcw.cli.train", "train a searched arch: dense, ADMM toward 4x1 blocks, masked fine-tuning"),
    "export": ("jcw.cli.export", "a trained model.pt -> ONNX with predicted latencies in its metadata"),
    "run": ("jcw.cli.run", "run an ONNX model through the jcw engine (benchmark, onnxruntime comparison)"),
    "space": ("jcw.cli.space", "print a model's search space (layers, coupling groups, genes)"),
    "plot": ("jcw.cli.plot", "overlay the fronts of search runs"),
    "random-prune": ("jcw.cli.random_prune", "the random channel pruning baseline"),
    "profile": ("latency.profile", "measure a latency table of our engine on this machine (= profile-latency)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: jcw COMMAND [options]   (jcw COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"{usage()}\n\njcw: error: unknown command {name!r}; accepted: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return module.main(rest)
    except UsageError as e:
        print(f"jcw {name}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
