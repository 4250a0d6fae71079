"""Re-export of :mod:`deltacd.datasets.xview2` (the xBD label reader and the xView2 score moved there)."""

from deltacd.datasets.xview2 import *  # noqa: F403
from deltacd.datasets.xview2 import __all__  # noqa: F401
