"""Damaged stores of the tiny dataset: one chunk of one row truncated, overwritten or deleted. Reading
the row through the stage's reader (and the training dataset) raises a ``StoreError`` naming the
store, row and sample token; ``verify_rows`` reports exactly that row; ``repair_rows`` and a run of
the stage recompute only it, and the store is then bit-identical to a clean build.

The clean build is the session's ``tiny_stores``; each test damages a private copy of its stores."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import StoreError
from pipeline.stages import Catalog, correspondences, depth_targets, teacher_cache
from pipeline.stages.index import ensure_index
from pipeline.store.rowstore import CHECK, RowStore
from pipeline.store.runner import run_local
from pipeline.store.stores import read_meta
from pipeline.store.verify import repair_rows, repair_table, verify_rows, verify_table
from tests.conftest import assert_same_stores, catalog_for

ROW, CAMERA = 3, 2
# the array whose chunk is damaged, and how the stage's own reader reads a row
ARRAYS = {"superpixels": "labels", "correspondences": "uvd", "depth_targets": "uvd", "teacher_cache": "features"}


def _read(catalog: Catalog, name: str, store: RowStore, row: int):
    if name == "superpixels":
        return store.read("labels", row), store.read("count", row)
    if name == "correspondences":
        return correspondences.read(store, row)
    if name == "depth_targets":
        return depth_targets.read(store, row)
    params = catalog.artifact(name).params
    return [teacher_cache.read(store, row, c, params) for c in range(6)]


def _copy(tiny_root: Path, tiny_stores: Catalog, root: Path) -> Catalog:
    catalog = Catalog.load(catalog_for(root, tiny_root, stages=True))
    shutil.copytree(tiny_stores.stage_root("tiny"), catalog.stage_root("tiny"))
    return catalog


def _chunk(path: str, array: str, row: int) -> Path:
    """The chunk file of ``array`` holding camera ``CAMERA`` of the row (or the row's first chunk)."""
    files = sorted(p for p in Path(path, array, "c", str(row)).rglob("*") if p.is_file())
    return files[min(CAMERA, len(files) - 1)]


def _damage(chunk: Path, kind: str) -> None:
    if kind == "truncated":
        chunk.write_bytes(chunk.read_bytes()[: len(chunk.read_bytes()) // 2])
    elif kind == "overwritten":  # the same chunk of another row: decodes fine, holds other values
        other = Path(str(chunk).replace(f"/c/{ROW}/", f"/c/{ROW + 1}/"))
        chunk.write_bytes(other.read_bytes())
    else:
        chunk.unlink()


@pytest.mark.parametrize("kind", ["truncated", "overwritten", "deleted"])
@pytest.mark.parametrize("name", list(ARRAYS))
def test_a_damaged_chunk_is_found_read_as_an_error_and_repaired(tiny_root, tiny_stores, tmp_path, name, kind):
    catalog = _copy(tiny_root, tiny_stores, tmp_path)
    path = catalog.artifact(name).path
    token = RowStore.open(path).tokens()[ROW]
    _damage(_chunk(path, ARRAYS[name], ROW), kind)

    store = RowStore.open(path)
    with pytest.raises(StoreError) as info:
        _read(catalog, name, store, ROW)
    message = str(info.value)
    assert path in message and f"row {ROW} (sample {token})" in message and f"array {ARRAYS[name]}" in message
    assert "hvd catalog verify --repair --source tiny" in message and f"hvd prep {name.replace('_', '-')} --source tiny" in message
    _read(catalog, name, store, ROW + 1)  # the other rows read as before

    report = verify_rows(path)
    assert report.checked == 8 and report.damaged_rows() == [ROW] and not report.unverifiable and not report.fatal
    assert {(f.token, f.array) for f in report.damaged} == {(token, ARRAYS[name])}
    reason = report.damaged[0].reason
    assert {"truncated": "undecodable chunk", "overwritten": "checksum mismatch", "deleted": "chunk is missing"}[kind] in reason
    for other in ARRAYS:
        if other != name:
            assert verify_rows(catalog.artifact(other).path).clean, other

    repair_rows(report)
    meta = read_meta(path)
    assert (meta.rows_done, meta.complete) == (7, False)
    summary = run_local(catalog, name)
    assert (summary.computed, summary.skipped, summary.complete) == (1, 7, True), summary
    assert_same_stores(catalog, tiny_stores, [name])
    assert verify_rows(path).clean


@pytest.mark.parametrize("lost", ["done", "check"])
def test_lost_bookkeeping_chunks_are_found_and_repaired(tiny_root, tiny_stores, tmp_path, lost):
    """An undecodable done flag, or a deleted checksum record, of one row."""
    catalog = _copy(tiny_root, tiny_stores, tmp_path)
    path = catalog.artifact("correspondences").path
    if lost == "done":
        Path(path, "done", "c", str(ROW)).write_bytes(b"garbage")
        assert not read_meta(path).complete  # the metadata counts done flags: one cannot be read
    else:
        Path(path, CHECK, "c", str(ROW), "0").unlink()
        with pytest.raises(StoreError, match=rf"row {ROW} .* of array counts is damaged: its checksum record is missing"):
            correspondences.read(RowStore.open(path), ROW)
    report = verify_rows(path)
    assert report.damaged_rows() == [ROW]
    repair_rows(report)
    summary = run_local(catalog, "correspondences")
    assert (summary.computed, summary.skipped) == (1, 7)
    assert_same_stores(catalog, tiny_stores, ["correspondences"])


def test_training_reads_name_the_damaged_store(tiny_root, tiny_stores, tmp_path):
    """The probe's case: the pretraining dataset met a truncated teacher-cache chunk as a raw blosc
    RuntimeError; it now raises the store's StoreError."""
    from pipeline.train.pretrain_data import DataConfig, PretrainDataset, open_stores

    catalog = _copy(tiny_root, tiny_stores, tmp_path)
    stores = open_stores(catalog)
    dataset = PretrainDataset(stores, DataConfig(split="train"))
    token = stores.index.tokens[int(dataset.rows[0])]
    path = catalog.artifact("teacher_cache").path
    row = RowStore.open(path).row_of(token)
    chunk = _chunk(path, "features", row)
    chunk.write_bytes(chunk.read_bytes()[:100])
    with pytest.raises(StoreError, match=rf"{path}: row {row} \(sample {token}\) of array features is damaged: undecodable"):
        PretrainDataset(stores, DataConfig(split="train"))[0]


def test_a_damaged_pca_basis_is_refitted_and_every_row_recomputed(tiny_root, tiny_stores, tmp_path):
    catalog = _copy(tiny_root, tiny_stores, tmp_path)
    path = catalog.artifact("teacher_cache").path
    for chunk in Path(path, "shared", "pca_mean", "c").rglob("*"):
        if chunk.is_file():
            chunk.unlink()
    with pytest.raises(StoreError, match=r"store-level array shared/pca_mean is damaged: .*hvd catalog verify --repair"):
        teacher_cache.read(RowStore.open(path), 0, 0, catalog.artifact("teacher_cache").params, restore_channels=True)
    report = verify_rows(path)
    assert [(f.row, f.array) for f in report.damaged] == [(None, "shared/pca_mean")]
    repair_rows(report)
    summary = run_local(catalog, "teacher_cache")
    assert (summary.computed, summary.complete) == (8, True)
    assert_same_stores(catalog, tiny_stores, ["teacher_cache"])


def test_an_unreadable_index_is_deleted_and_rebuilt(tiny_root, tiny_stores, tmp_path):
    catalog = _copy(tiny_root, tiny_stores, tmp_path)
    path = catalog.artifact("index").path
    assert verify_table(path).clean and verify_table(path).checked == 8
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:2000] + bytes(64) + data[2064:])  # a data page of the file zeroed
    report = verify_table(path)
    assert report.fatal and path in report.fatal
    repair_table(report)
    index, built = ensure_index(catalog)
    assert built and index.tokens == ensure_index(tiny_stores)[0].tokens
    np.testing.assert_array_equal(index.column("row_hash"), ensure_index(tiny_stores)[0].column("row_hash"))
