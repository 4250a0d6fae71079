"""``python -m deltacd.cli``: the command line, as the ``deltacd`` script and ``python -m deltacd``."""

import sys

from deltacd.cli import main

sys.exit(main())
