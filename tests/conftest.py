"""Fixtures shared across the test packages."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

SMALL_CATALOG = """\
store_root: stores
default_source: alpha
sources:
  alpha:
    dataroot: data/alpha
    version: v1.0-mini
    split: {kind: seeded, val_fraction: 0.25, seed: 0}
  beta:
    dataroot: data/beta
    version: v1.0-mini
    split: {kind: seeded}
artifacts:
  index:
    stage: index
"""


@pytest.fixture
def write_catalog(tmp_path: Path) -> Callable[..., Path]:
    """Writes a catalog (default: two sources, one ``index`` artifact) under ``tmp_path``."""

    def write(text: str = SMALL_CATALOG, name: str = "catalog.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def small_catalog() -> str:
    """The text ``write_catalog`` writes by default, for tests that edit it first."""
    return SMALL_CATALOG
