"""The review store: every answer an analyst gave about a run's objects, in ``RUN_DIR/review.gpkg``.

One layer, ``answers``: ``reviewer``, ``time_utc`` (ISO 8601), ``object_id``, ``answer`` (0 no
change / 1 change, or the damage grade 0-3), ``source`` (``web``, ``file:NAME``...) and the
object's outline (multipolygon, the run's CRS). Nothing is ever updated or deleted: the latest
answer about an object (highest ``fid``) is the one that counts, the earlier ones stay as the
history.

A GeoPackage is an SQLite database, so each call of :meth:`ReviewStore.add` is one SQLite
transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``, with SQLite's rollback journal): a process killed
mid-write loses at most the answers of that call and leaves a valid file, and two writers (two
browser tabs, a refine beside the server) wait for each other instead of corrupting it. The
layer is made by GDAL (pyogrio) once, without a spatial index, because the R-tree's triggers call
GDAL's SQL functions, which a plain SQLite connection lacks; QGIS opens it as it is, styled by
answer. The file is created under a temporary name and linked into place, so a concurrent first
answer never sees a half-made store.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from rasterio.crs import CRS

from deltacd.errors import InputError, OutputError
from deltacd.io.qgis import categorized_qml, store_style

STORE = "review.gpkg"
LAYER = "answers"
#: Seconds a writer waits for another one's transaction before giving up.
BUSY_TIMEOUT_S = 30.0

ANSWER_STYLE = {0: ("no change", "#1a9641"), 1: ("change", "#d7191c")}
GRADE_STYLE = {0: ("no damage", "#1a9641"), 1: ("minor", "#fdae61"), 2: ("major", "#f46d43"), 3: ("destroyed", "#a50026")}


@dataclass(frozen=True)
class Answer:
    """One answer about one object."""

    object_id: int
    answer: int
    geometry: shapely.Geometry | None = None
    reviewer: str = ""
    source: str = ""


def _gpkg_blob(geometry: shapely.Geometry | None, srs_id: int) -> bytes | None:
    """A GeoPackage geometry blob: the 'GP' header with the envelope, then little-endian WKB."""
    if geometry is None or geometry.is_empty:
        return None
    if geometry.geom_type == "Polygon":
        geometry = shapely.MultiPolygon([geometry])
    minx, miny, maxx, maxy = geometry.bounds
    header = b"GP" + bytes([0, 0b00000011]) + struct.pack("<i4d", srs_id, minx, maxx, miny, maxy)
    return header + shapely.to_wkb(geometry, byte_order=1)


class ReviewStore:
    """The answers of a run (module notes). Creating the object touches nothing; the file is made at the first :meth:`add`."""

    def __init__(self, run_dir: str | Path, crs: CRS | str, *, kind: str = "detect"):
        self.path = Path(run_dir) / STORE
        self.crs = CRS.from_user_input(crs)
        self.kind = kind

    @property
    def allowed(self) -> tuple[int, ...]:
        return (0, 1, 2, 3) if self.kind == "damage" else (0, 1)

    def _create(self) -> None:
        frame = gpd.GeoDataFrame(
            {"reviewer": pd.Series([], dtype=str), "time_utc": pd.Series([], dtype=str),
             "object_id": pd.Series([], dtype="int64"), "answer": pd.Series([], dtype="int32"),
             "source": pd.Series([], dtype=str)},
            geometry=gpd.GeoSeries([], crs=self.crs))
        handle, tmp = tempfile.mkstemp(prefix=".review.", suffix=".gpkg", dir=self.path.parent)
        os.close(handle)
        os.unlink(tmp)
        try:
            pyogrio.write_dataframe(frame, tmp, layer=LAYER, driver="GPKG", geometry_type="MultiPolygon",
                                    layer_options={"SPATIAL_INDEX": "NO"})
            store_style(Path(tmp), LAYER, categorized_qml("answer", GRADE_STYLE if self.kind == "damage" else ANSWER_STYLE))
            try:
                os.link(tmp, self.path)  # atomic, and refuses to replace a store another writer made meanwhile
            except FileExistsError:
                pass
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        return db

    def add(self, answers: Iterable[Answer]) -> int:
        """Write ``answers`` in one transaction (all or none); returns how many. Raises :class:`InputError` on a
        value outside :attr:`allowed` before writing anything."""
        answers = list(answers)
        for a in answers:
            if int(a.answer) not in self.allowed:
                raise InputError(f"{self.path}: answer {a.answer!r} for object {a.object_id} is not one of "
                                 f"{', '.join(map(str, self.allowed))}")
        if not answers:
            return 0
        try:
            return self._add(answers)
        except (OSError, sqlite3.Error) as exc:
            raise OutputError(f"{self.path}: cannot write the review store ({exc}); make the run folder writable, "
                              "or free disk space (the answers were not saved)") from exc

    def _add(self, answers: list[Answer]) -> int:
        if not self.path.exists():
            self._create()
        db = self._connect()
        try:
            srs_id = db.execute("SELECT srs_id FROM gpkg_geometry_columns WHERE table_name = ?", (LAYER,)).fetchone()[0]
            now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            rows = [(_gpkg_blob(a.geometry, srs_id), a.reviewer, now, int(a.object_id), int(a.answer), a.source)
                    for a in answers]
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(f'INSERT INTO "{LAYER}" (geom, reviewer, time_utc, object_id, answer, source) '
                               "VALUES (?, ?, ?, ?, ?, ?)", rows)
                db.execute("UPDATE gpkg_contents SET last_change = ? WHERE table_name = ?", (now, LAYER))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        finally:
            db.close()
        return len(answers)

    def latest(self) -> dict[int, int]:
        """The answer that counts for each reviewed object: ``object_id -> answer``."""
        return latest_answers(self.path.parent)

    def history(self) -> gpd.GeoDataFrame:
        """Every answer, oldest first."""
        if not self.path.exists():
            return gpd.GeoDataFrame({"reviewer": [], "time_utc": [], "object_id": [], "answer": [], "source": []},
                                    geometry=[], crs=self.crs)
        return gpd.read_file(self.path, layer=LAYER).sort_index()

    def counts(self) -> dict[str, int]:
        latest = self.latest()
        values = np.array(list(latest.values()), dtype=int)
        return {"objects": len(latest), **{str(k): int((values == k).sum()) for k in self.allowed}}


def latest_answers(run_dir: str | Path) -> dict[int, int]:
    """The answer that counts for each object reviewed on the run in ``run_dir`` (empty when none was given).

    The same answers given twice give the same result, so a study can tell new answers from a rerun.
    """
    path = Path(run_dir) / STORE
    if not path.exists():
        return {}
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
    try:
        rows = db.execute(f'SELECT object_id, answer FROM "{LAYER}" WHERE fid IN '
                          f'(SELECT MAX(fid) FROM "{LAYER}" GROUP BY object_id)').fetchall()
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{path}: not a deltacd review store ({exc}); move it out of the run folder, "
                         "then answer again (deltacd review)") from exc
    finally:
        db.close()
    return {int(o): int(a) for o, a in rows}


__all__ = ["LAYER", "STORE", "Answer", "ReviewStore", "latest_answers"]
