"""`python -m jcw COMMAND ...`: the `jcw` command."""

import sys

from jcw.cli.main import main

sys.exit(main())
