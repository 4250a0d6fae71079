"""Former home of the pixel metrics, kept so ``from deltacd.evaluate.metrics import X`` still works.

The metrics now live in :mod:`deltacd.metrics` (one module per concept: pixel, bootstrap, curves,
area); import them from there.
"""

from deltacd.metrics import *  # noqa: F403
from deltacd.metrics import __all__  # noqa: F401
