"""`python -m jcw.plot`: the same command as `jcw plot` (jcw.cli.plot)."""

import sys

from jcw.cli.plot import main

if __name__ == "__main__":
    sys.exit(main())
