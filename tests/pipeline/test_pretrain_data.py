"""The pretraining dataset reads the stores only, refuses missing, stale or incomplete ones by
naming the command that builds them, and is reproducible per (seed, epoch, example)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import depth_targets, teacher_cache
from pipeline.augment import AugmentConfig
from pipeline.catalog import Catalog
from pipeline.errors import StoreError
from pipeline.pretrain_data import DataConfig, PretrainDataset, collate, open_stores
from pipeline.rowstore import RowStore
from tests.conftest import catalog_for

VALIDATION = DataConfig(split="train", augment=AugmentConfig(enabled=False))


def test_the_validation_view_reproduces_the_stores(tiny_stores):
    stores = open_stores(tiny_stores)
    example = PretrainDataset(stores, VALIDATION)[0]
    opened = stores.open()
    row = opened["teacher_cache"].row_of(example["token"])
    params = stores.artifacts["teacher_cache"].params
    for c in range(6):
        np.testing.assert_allclose(example["features"][c], teacher_cache.read(opened["teacher_cache"], row, c, params), rtol=1e-5, atol=1e-4)
        stored = opened["depth_targets"].read("depth", opened["depth_targets"].row_of(example["token"]))[c]
        np.testing.assert_array_equal(example["depth_target"][c].astype(np.float16), stored)
    assert example["superpixels"].shape == (6, 64, 112) and (example["sp_count"] > 10).all()
    assert np.allclose(example["lidar_aug"], np.eye(4))
    # pairings land on valid pixels; each voxel has one representative point
    assert (example["pair_uv"] >= -0.5).all() and (example["pair_uv"][:, 0] < 112 - 0.5).all()
    assert example["inverse"].max() + 1 == len(example["coords"]) and len(example["points"]) == len(example["inverse"])


def test_augmented_examples_are_reproducible(tiny_stores):
    stores = open_stores(tiny_stores)
    dataset = PretrainDataset(stores, DataConfig(split="train"), seed=3)
    a, b = dataset[1], dataset[1]
    np.testing.assert_array_equal(a["points"], b["points"])
    np.testing.assert_array_equal(a["img_aug"], b["img_aug"])
    dataset.set_epoch(1)
    c = dataset[1]
    assert not np.array_equal(a["img_aug"], c["img_aug"])  # a new epoch, new augmentations
    assert not np.allclose(a["lidar_aug"], np.eye(4))
    for epoch in range(3):  # every pairing's pixel (rounded in float64) lies in its augmented image
        dataset.set_epoch(epoch)
        for i in range(len(dataset)):
            pixel = dataset[i]["pair_pixel"]
            assert pixel.min() >= 0 and pixel[:, 0].max() < 64 and pixel[:, 1].max() < 112


def test_collate_offsets_pairings_into_the_batch(tiny_stores):
    stores = open_stores(tiny_stores)
    dataset = PretrainDataset(stores, VALIDATION)
    examples = [dataset[0], dataset[1]]
    batch = collate(examples)
    n0 = len(examples[0]["points"])
    assert batch["points"].shape[0] == n0 + len(examples[1]["points"])
    second = batch["pair_image"] >= 6
    assert (batch["pair_point"][second] >= n0).all() and (batch["pair_point"][~second] < n0).all()
    assert batch["features"].shape[0] == batch["superpixels"].shape[0] == 12
    assert batch["image_batch"].tolist() == [0] * 6 + [1] * 6
    row, col = batch["pair_pixel"][:, 0], batch["pair_pixel"][:, 1]
    assert row.max() < 64 and col.max() < 112 and row.min() >= 0


def test_missing_stale_and_incomplete_stores_are_refused(tiny_root, tiny_stores, tmp_path):
    fresh = Catalog.load(catalog_for(tmp_path / "empty", tiny_root, stages=True))
    with pytest.raises(StoreError, match="hvd prep superpixels --source tiny"):
        open_stores(fresh)
    changed = Catalog.load(catalog_for(tmp_path / "changed", tiny_root, params={"superpixels": {"n_segments": 99}}, stages=True))
    # same store root as the built one, but its superpixels params changed: a stale store
    import shutil

    shutil.copytree(tiny_stores.stage_root("tiny"), changed.stage_root("tiny"))
    stale = changed.artifact("superpixels")
    built = tiny_stores.artifact("superpixels")
    shutil.move(str(tmp_path / "changed" / "stores" / "tiny" / built.path.rsplit("/", 1)[1]), stale.path)
    with pytest.raises(StoreError, match="stale"):
        open_stores(changed)
    incomplete = Catalog.load(catalog_for(tmp_path / "incomplete", tiny_root, stages=True))
    shutil.copytree(tiny_stores.stage_root("tiny"), incomplete.stage_root("tiny"))
    store = RowStore.open(incomplete.artifact("depth_targets").path, mode="r+")
    store.array("done")[3] = 0
    with pytest.raises(StoreError, match=r"lacks 1 of 8 keyframes.*hvd prep depth-targets"):
        open_stores(incomplete)


def test_depth_and_teacher_grids_must_agree(tiny_root, tiny_stores, tmp_path):
    import shutil

    from pipeline.errors import CatalogError

    mismatched = Catalog.load(catalog_for(tmp_path, tiny_root, params={"depth_targets": {"input_size": [32, 56]}}, stages=True))
    shutil.copytree(tiny_stores.stage_root("tiny"), mismatched.stage_root("tiny"))
    from pipeline.runner import run_local

    assert run_local(mismatched, "depth_targets").complete
    with pytest.raises(CatalogError, match="must share input size"):
        open_stores(mismatched)
    assert depth_targets.DepthTargetParams(input_size=(32, 56)).grid == (8, 14)
