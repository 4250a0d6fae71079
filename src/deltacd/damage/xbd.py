"""Moved to :mod:`deltacd.datasets.xbd_tiles` (training reads the tiles too); re-exported here for older imports."""

from deltacd.datasets.xbd_tiles import DEFAULT_CRS, XbdTile, list_tiles, write_xbd_tile

__all__ = ["DEFAULT_CRS", "XbdTile", "list_tiles", "write_xbd_tile"]
