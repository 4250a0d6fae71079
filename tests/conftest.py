"""Shared fixtures: the real data folder and small synthetic GeoTIFFs with known answers."""

from __future__ import annotations

from pathlib import Path

import pytest

#: Real labelled data, next to the repository (CI has it at the same relative path).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA}; it must sit at ../shared/data next to the repository")
    return SHARED_DATA
