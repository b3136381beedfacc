"""`python -m jcw.space`: the same command as `jcw space` (jcw.cli.space)."""

import sys

from jcw.cli.space import main

if __name__ == "__main__":
    sys.exit(main())
