"""``python -m deltacd``: the command line, as the ``deltacd`` script."""

import sys

from deltacd.cli import main

sys.exit(main())
