"""Row checksums of ``RowStore`` on a small synthetic store with many chunks per row: what ``write``
records, which blocks a prefix or one-entry read verifies, and how damage reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import StoreError
from pipeline.store.rowstore import CHECK, CHECKS_KEY, ArraySpec, RowStore
from pipeline.store.stores import StoreMeta, code_version, utc_now
from pipeline.store.verify import repair_rows, verify_rows

HASH = "ab" * 32
SPECS = {
    "points": ArraySpec((40, 3), "float32", chunk=(8, 3)),  # ragged: five blocks of 8 entries
    "images": ArraySpec((4, 2, 5), "uint8", chunk=(1, 2, 5)),  # one block per image
    "count": ArraySpec((), "int64"),  # a per-row scalar
}


def _meta(rows: int) -> StoreMeta:
    return StoreMeta(
        fingerprint="f" * 64, stage="demo_stage", version=1, source="alpha", params={}, inputs={}, created=utc_now(),
        code_version=code_version(), rows_total=rows, rows_done=0, complete=False,
    )


def _values(row: int, n_points: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(row)
    return {
        "points": rng.normal(size=(n_points, 3)).astype(np.float32),
        "images": rng.integers(1, 255, size=(4, 2, 5)).astype(np.uint8),
        "count": np.int64(n_points),
    }


@pytest.fixture
def store(tmp_path: Path) -> tuple[RowStore, dict[int, dict]]:
    """Three rows: 21 points (three blocks, the last partial), 40 (all five), none."""
    store = RowStore.open_or_create(str(tmp_path / "demo.zarr"), _meta(3), SPECS)
    store.assign(["tok-a", "tok-b", "tok-c"])
    values = {0: _values(0, 21), 1: _values(1, 40), 2: _values(2, 0)}
    for row, value in values.items():
        store.write(row, value, HASH)
    return RowStore.open(store.path), values


def _chunk(store: RowStore, name: str, row: int, block: int) -> Path:
    return Path(store.path, name, "c", str(row), str(block), *["0"] * (store.array(name).ndim - 2))


def test_write_records_the_shape_and_a_checksum_per_block(store) -> None:
    store, values = store
    check = np.stack([store.recorded("points", row) for row in range(3)])
    assert check.shape == (3, 2 + 5)  # (n, 3), then five blocks of 8 points
    assert check[0, :2].tolist() == [21, 3] and (check[0, 2:5] >= 0).all() and (check[0, 5:] == -1).all()
    assert check[1, :2].tolist() == [40, 3] and (check[1, 2:] >= 0).all()
    assert check[2, :2].tolist() == [0, 3] and (check[2, 2:] == -1).all()
    assert store.recorded("images", 0)[:3].tolist() == [4, 2, 5] and store.recorded("count", 1).shape == (1,)
    assert store.array(CHECK).shape == (3, 1 + (3 + 4) + (2 + 5))  # every output's columns in one chunk per row
    assert store.group.attrs[CHECKS_KEY]["every_done_row"] is True
    np.testing.assert_array_equal(store.read("points", 0, 21), values[0]["points"])
    np.testing.assert_array_equal(store.read("points", 0, 5), values[0]["points"][:5])
    np.testing.assert_array_equal(store.read("points", 2, 0), np.zeros((0, 3), np.float32))
    np.testing.assert_array_equal(store.read_entry("images", 1, 3), values[1]["images"][3])
    assert store.read("count", 1) == 40


def test_a_read_verifies_exactly_the_blocks_it_overlaps(store) -> None:
    store, values = store
    other = _chunk(store, "points", 1, 2).read_bytes()
    _chunk(store, "points", 0, 2).write_bytes(other)  # decodes, but is row 1's block: entries 16:21 differ
    np.testing.assert_array_equal(store.read("points", 0, 16), values[0]["points"][:16])  # blocks 0-1 only
    for length in (17, 21, None):
        with pytest.raises(StoreError, match=r"row 0 \(sample tok-a\) of array points is damaged: checksum mismatch in entries 16:21"):
            store.read("points", 0, length)
    _chunk(store, "images", 1, 3).unlink()  # one image's chunk deleted: zarr reads zeros there
    np.testing.assert_array_equal(store.read_entry("images", 1, 2), values[1]["images"][2])
    with pytest.raises(StoreError, match="entries 3:4 of the row .* read as the fill value .* chunk is missing") as info:
        store.read_entry("images", 1, 3)
    message = str(info.value)
    assert store.path in message and "tok-b" in message and "hvd catalog verify --repair --source alpha" in message
    assert "hvd prep demo-stage --source alpha" in message


def test_undecodable_chunks_and_lost_checks_are_store_errors(store) -> None:
    store, _ = store
    chunk = _chunk(store, "points", 1, 4)
    chunk.write_bytes(chunk.read_bytes()[:7])
    with pytest.raises(StoreError, match=r"row 1 \(sample tok-b\) of array points is damaged: undecodable chunk \(RuntimeError"):
        store.read("points", 1, 40)
    Path(store.path, CHECK, "c", "0", "0").unlink()
    with pytest.raises(StoreError, match="checksum record is missing"):
        store.read("count", 0)


def test_verify_finds_each_damaged_row_and_repair_resets_only_those(store) -> None:
    store, values = store
    assert verify_rows(store.path).clean
    _chunk(store, "images", 0, 1).unlink()
    chunk = _chunk(store, "points", 1, 0)
    chunk.write_bytes(b"\0" * 16)
    report = verify_rows(store.path)
    assert report.checked == 3 and report.damaged_rows() == [0, 1] and not report.unverifiable
    assert {(f.row, f.token, f.array) for f in report.damaged} == {(0, "tok-a", "images"), (1, "tok-b", "points")}
    repair_rows(report)
    repaired = RowStore.open(store.path)
    assert repaired.done().tolist()[:2] == [0, 0] and repaired.done()[2] != 0
    assert not [p for p in Path(store.path, "points", "c", "1").rglob("*") if p.is_file()]  # row 1's chunks deleted
    with pytest.raises(StoreError, match="not computed"):
        repaired.read("points", 1, 40)
    writer = RowStore.open(store.path, mode="r+")
    for row in (0, 1):  # what the next run does: write the rows again
        writer.write(row, values[row], HASH)
    assert verify_rows(store.path).clean
    np.testing.assert_array_equal(RowStore.open(store.path).read("points", 1, 40), values[1]["points"])


def test_rows_written_before_checksums_read_unverified_and_verify_reports_them(store) -> None:
    store, values = store
    writer = RowStore.open(store.path, mode="r+")
    del writer.group[CHECK]  # what a store written by the previous version looks like
    del writer.group.attrs[CHECKS_KEY]
    old = RowStore.open(store.path)
    np.testing.assert_array_equal(old.read("points", 1, 40), values[1]["points"])
    report = verify_rows(store.path)
    assert report.unverifiable == [0, 1, 2] and not report.damaged and not report.clean
    upgraded = RowStore.open_or_create(store.path, _meta(3), SPECS)  # the next hvd prep adds the check arrays
    assert upgraded.group.attrs[CHECKS_KEY]["every_done_row"] is False
    np.testing.assert_array_equal(RowStore.open(store.path).read("points", 1, 40), values[1]["points"])  # still unverified
    assert verify_rows(store.path).unverifiable == [0, 1, 2]
    repair_rows(verify_rows(store.path))
    assert not RowStore.open(store.path).done().any()
    assert RowStore.open(store.path).group.attrs[CHECKS_KEY]["every_done_row"] is True


def test_a_store_grown_wider_keeps_its_rows_checks(store) -> None:
    store, values = store
    wider = {**SPECS, "points": ArraySpec((60, 3), "float32", chunk=(8, 3))}
    before = RowStore.open(store.path).group.attrs[CHECKS_KEY]["layout"]
    grown = RowStore.open_or_create(store.path, _meta(3), wider)
    layout = grown.group.attrs[CHECKS_KEY]["layout"]
    assert grown.array(CHECK).shape == (3, 15 + 3)  # three more blocks' columns, appended
    assert layout["points"]["sums"] == [*before["points"]["sums"], [15, 3]] and layout["images"] == before["images"]
    np.testing.assert_array_equal(RowStore.open(store.path).read("points", 1, 40), values[1]["points"])
    assert verify_rows(store.path).clean


def test_shared_arrays_carry_a_checksum(tmp_path: Path) -> None:
    store = RowStore.open_or_create(str(tmp_path / "demo.zarr"), _meta(0), SPECS)
    basis = np.arange(12, dtype=np.float32).reshape(3, 4)
    store.write_shared("basis", basis)
    np.testing.assert_array_equal(RowStore.open(store.path).read_shared("basis"), basis)
    for chunk in Path(store.path, "shared", "basis", "c").rglob("*"):
        if chunk.is_file():
            chunk.unlink()
    with pytest.raises(StoreError, match="store-level array shared/basis is damaged: its values read as the fill value"):
        RowStore.open(store.path).read_shared("basis")
    report = verify_rows(store.path)
    assert [f.array for f in report.damaged] == ["shared/basis"]


@pytest.mark.filterwarnings("ignore:Object at points is not recognized")
def test_a_lost_array_is_a_store_error_and_fatal_for_verify(store) -> None:
    store, _ = store
    Path(store.path, "points", "zarr.json").unlink()
    with pytest.raises(StoreError, match=r"the array points cannot be opened .* delete the store to rebuild it"):
        RowStore.open(store.path).read("points", 0, 21)
    report = verify_rows(store.path)
    assert report.fatal and "points" in report.fatal
    with pytest.raises(StoreError, match="cannot repair"):
        repair_rows(report)
