"""`python -m jcw.run` (works on a board without torch): the `jcw run` command."""

import sys

from jcw.cli.run import main

if __name__ == "__main__":
    sys.exit(main())
