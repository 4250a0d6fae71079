"""Change methods that misbehave on purpose, for the block, Dask and resume tests.

In a module of their own so that Dask worker processes (which import it by name) and a child
Python process can load them. Each gives CVA's scores and describes itself as CVA, so its
outputs can be compared with a plain CVA run.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from deltacd.methods.cva import CVA


class SlowCVA(CVA):
    """CVA that sleeps ``delay`` seconds per tile: a run long enough to be killed half-way."""

    def __init__(self, delay: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.delay = delay

    def predict(self, before, after):
        time.sleep(self.delay)
        return super().predict(before, after)


class KillsItsWorker(CVA):
    """CVA whose first tile, in whatever process scores it, kills that process (SIGKILL); ``marker`` says it happened."""

    def __init__(self, marker: str | Path, **kwargs):
        super().__init__(**kwargs)
        self.marker = str(marker)

    def predict(self, before, after):
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return super().predict(before, after)
        os.kill(os.getpid(), signal.SIGKILL)


class Interrupts(CVA):
    """CVA that raises KeyboardInterrupt (Ctrl+C) after ``tiles`` tiles."""

    def __init__(self, tiles: int, **kwargs):
        super().__init__(**kwargs)
        self.tiles = tiles
        self.seen = 0

    def predict(self, before, after):
        self.seen += 1
        if self.seen > self.tiles:
            raise KeyboardInterrupt
        return super().predict(before, after)
