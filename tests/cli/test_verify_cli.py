"""``hvd catalog verify [--repair]`` on a copy of the tiny dataset's stores with one damaged row."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from pipeline.stages import Catalog
from pipeline.store.rowstore import RowStore
from pipeline.store.runner import run_local
from tests.conftest import assert_same_stores, catalog_for

ROW = 5


@pytest.fixture
def damaged(tiny_root, tiny_stores, tmp_path, monkeypatch) -> tuple[Catalog, str]:
    """A copy of the built stores whose correspondences row 5 lost its pairings chunk; (catalog, token)."""
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.delenv("HVD_CATALOG", raising=False)
    catalog = Catalog.load(catalog_for(tmp_path, tiny_root, stages=True))
    shutil.copytree(tiny_stores.stage_root("tiny"), catalog.stage_root("tiny"))
    path = catalog.artifact("correspondences").path
    Path(path, "point", "c", str(ROW), "0").unlink()
    return catalog, RowStore.open(path).tokens()[ROW]


def _invoke(*args: str):
    return CliRunner().invoke(app, ["catalog", *args])


def test_verify_reports_the_damaged_row_and_exits_1(damaged) -> None:
    catalog, token = damaged
    result = _invoke("verify", "--catalog", str(catalog.path))
    assert result.exit_code == 1, result.output
    line = next(row for row in result.output.splitlines() if token in row)
    assert line.split()[0] == str(ROW) and "point" in line and "chunk is missing" in line
    assert f"correspondences: 1 damaged row(s) of 8 rows -> {catalog.artifact('correspondences').path}" in result.output
    for name in ("index", "superpixels", "depth_targets", "teacher_cache"):
        assert f"{name}: ok" in result.output
    assert "hvd catalog verify --repair --source tiny" in result.output
    only = _invoke("verify", "depth_targets", "--catalog", str(catalog.path))
    assert only.exit_code == 0 and "correspondences" not in only.output
    assert _invoke("verify", "nonsense", "--catalog", str(catalog.path)).exit_code == 2


def test_verify_repair_resets_the_row_and_prep_recomputes_only_it(damaged, tiny_stores) -> None:
    catalog, token = damaged
    result = _invoke("verify", "--repair", "--catalog", str(catalog.path))
    assert result.exit_code == 0, result.output
    assert "repaired: 1 row(s) marked not done" in result.output and "hvd prep correspondences --source tiny" in result.output
    shown = _invoke("show", "--catalog", str(catalog.path))
    line = next(row for row in shown.output.splitlines() if row.strip("│ ").startswith("correspondences "))
    assert "partial" in line and "7/8" in line
    assert "hvd catalog verify" in shown.output
    again = _invoke("verify", "--catalog", str(catalog.path))
    assert again.exit_code == 0 and "correspondences: ok, 7 rows verified" in again.output  # the reset row is not done
    summary = run_local(catalog, "correspondences")
    assert (summary.computed, summary.skipped, summary.complete) == (1, 7, True)
    assert_same_stores(catalog, tiny_stores, ["correspondences"])
    assert "correspondences: ok, 8 rows verified" in _invoke("verify", "--catalog", str(catalog.path)).output


def test_a_store_error_from_a_dataloader_worker_prints_as_its_own_message() -> None:
    """Training meets damaged rows in DataLoader workers; torch re-raises the StoreError with the
    worker's traceback as its message. The CLI prints the store's message, not the traceback."""
    from torch._utils import ExceptionWrapper

    from cli.main import _message
    from pipeline.errors import StoreError

    message = "stores/x.zarr: row 3 (sample abc) of array features is damaged: undecodable chunk; run `hvd catalog verify --repair`"
    try:
        try:
            raise StoreError(message)
        except StoreError:
            ExceptionWrapper(where="in DataLoader worker process 0").reraise()
    except StoreError as wrapped:
        assert "Original Traceback" in str(wrapped)
        assert _message(wrapped) == f"{message} (raised in DataLoader worker process 0)"
    assert _message(StoreError(message)) == message
