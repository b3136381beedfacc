"""`python -m jcw.search`: the `jcw search` command."""

import sys

from jcw.cli.search import main

sys.exit(main(prog="python -m jcw.search"))
