"""`python -m jcw.train`: the `jcw train` command."""

import sys

from jcw.cli.train import main

sys.exit(main())
