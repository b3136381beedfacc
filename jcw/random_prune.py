"""`python -m jcw.random_prune`: the same command as `jcw random-prune` (jcw.cli.random_prune)."""

import sys

from jcw.cli.random_prune import main

if __name__ == "__main__":
    sys.exit(main())
