"""The pretraining dataset reads the stores only, refuses missing, stale or incomplete ones by
naming the command that builds them, and is reproducible per (seed, epoch, example)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import StoreError
from pipeline.stages import Catalog, depth_targets, teacher_cache
from pipeline.store.rowstore import RowStore
from pipeline.store.runner import row_hashes
from pipeline.train import augment
from pipeline.train.augment import AugmentConfig
from pipeline.train.pretrain_data import DataConfig, PretrainDataset, collate, open_stores
from tests.conftest import SUPERPIXELS, catalog_for

VALIDATION = DataConfig(split="train", augment=AugmentConfig(enabled=False))


def test_the_validation_view_reproduces_the_stores(tiny_stores):
    stores = open_stores(tiny_stores)
    example = PretrainDataset(stores, VALIDATION)[0]
    opened = stores.open()
    row = opened["teacher_cache"].row_of(example["token"])
    params = stores.artifacts["teacher_cache"].params
    points = depth_targets.read(opened["depth_targets"], opened["depth_targets"].row_of(example["token"]))
    image_hw = stores.index.record(int(stores.index.rows("train")[0]))["image_hw"]
    for c, (uv, depth) in enumerate(points):
        np.testing.assert_allclose(example["features"][c], teacher_cache.read(opened["teacher_cache"], row, c, params), rtol=1e-5, atol=1e-4)
        # the plain resize to 64 x 112 scales pixel edges: a point's cell is floor((u + 0.5) * 112 / W / 4)
        target = example["depth_target"][c]
        scale = np.array([112 / image_hw[c][1], 64 / image_hw[c][0]])
        cells = np.floor((uv.astype(np.float64) + 0.5) * scale / 4).astype(int)
        assert target.shape == (16, 28) and (target[cells[:, 1], cells[:, 0]] <= depth).all()
        assert (target > 0).sum() == len({tuple(x) for x in cells}) and target[target > 0].min() == depth.min()
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
    changed = Catalog.load(catalog_for(tmp_path / "changed", tiny_root, params={"superpixels": {SUPERPIXELS: {"n_segments": 99}}}, stages=True))
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
    # ``hvd show`` checks only the rows of its keyframe
    from pipeline.stages.index import ensure_index

    missing = ensure_index(incomplete, "tiny")[0].tokens.index(store.tokens()[3])
    assert len(open_stores(incomplete, rows=[r for r in range(8) if r != missing]).paths) == 4
    with pytest.raises(StoreError, match=r"lacks 1 of 1 keyframes"):
        open_stores(incomplete, rows=[missing])


def _copy_of_the_stores(tiny_root, tiny_stores, root, params=None) -> Catalog:
    import shutil

    catalog = Catalog.load(catalog_for(root, tiny_root, params=params, stages=True))
    shutil.copytree(tiny_stores.stage_root("tiny"), catalog.stage_root("tiny"))
    return catalog


def test_depth_targets_come_from_the_store(tiny_root, tiny_stores, tmp_path):
    """Editing a stored depth moves the dataset's target at exactly that point's cell; dropping
    a camera's points empties its targets; restoring the store restores the targets."""
    catalog = _copy_of_the_stores(tiny_root, tiny_stores, tmp_path)
    stores = open_stores(catalog)
    before = PretrainDataset(stores, VALIDATION)[0]
    store = RowStore.open(catalog.artifact("depth_targets").path, mode="r+")
    row = store.row_of(before["token"])
    hashes = row_hashes(depth_targets, catalog.artifact("depth_targets").params, stores.index)  # what the stage's rows are done for
    row_hash = hashes[list(stores.index.tokens).index(before["token"])]
    counts = store.read("counts", row)
    saved = {"uvd": store.read("uvd", row, int(counts.sum())).copy(), "counts": counts.copy()}
    c, j = 2, 7
    uv_aug = augment.apply_image_matrix(before["img_aug"][c], saved["uvd"][sum(saved["counts"][:c]) + j, :2].astype(np.float64))
    col, cell_row = np.floor((uv_aug + 0.5) / 4).astype(int)
    nearer = np.float32(0.5 * before["depth_target"][c][cell_row, col])
    uvd = saved["uvd"].copy()
    uvd[sum(saved["counts"][:c]) + j, 2] = nearer
    store.write(row, {"uvd": uvd}, row_hash)  # edits go through write: the row's checksums follow them
    edited = PretrainDataset(open_stores(catalog), VALIDATION)[0]["depth_target"]
    assert edited[c][cell_row, col] == nearer
    changed = edited != before["depth_target"]
    assert changed.sum() == 1 and changed[c, cell_row, col]
    store.write(row, {"counts": np.array([*saved["counts"][:5], 0], dtype=np.int32)}, row_hash)  # the last camera's points: the others' stay in place
    dropped = PretrainDataset(open_stores(catalog), VALIDATION)[0]["depth_target"]
    assert (dropped[5] == 0).all() and (before["depth_target"][5] > 0).any()
    np.testing.assert_array_equal(dropped[:5], edited[:5])
    store.write(row, saved, row_hash)
    np.testing.assert_array_equal(PretrainDataset(open_stores(catalog), VALIDATION)[0]["depth_target"], before["depth_target"])


def test_the_depth_range_must_be_the_depth_bins(tiny_root, tiny_stores, tmp_path):
    from pipeline.errors import CatalogError
    from pipeline.store.runner import run_local

    shallow = _copy_of_the_stores(tiny_root, tiny_stores, tmp_path, params={"depth_targets": {"max_depth_m": 50.0}})
    assert run_local(shallow, "depth_targets").complete
    with pytest.raises(CatalogError, match=r"depth bins span \[1.0, 60.0\)"):
        open_stores(shallow)


def test_examples_follow_the_input_convention(tiny_stores):
    """SLidR's convention (model.input): cylindrical voxels of the cloud and the raw intensity; the
    pairings and the inverse map are per point, whatever the voxels."""
    from pipeline.data.sensor_data import in_range, load_points
    from pipeline.train.voxelize import SLIDR_INPUT, voxelize

    stores = open_stores(tiny_stores)
    hvd = PretrainDataset(stores, VALIDATION)[0]
    slidr = PretrainDataset(stores, VALIDATION, input=SLIDR_INPUT)[0]
    np.testing.assert_array_equal(slidr["points"], hvd["points"])
    np.testing.assert_array_equal(slidr["pair_point"], hvd["pair_point"])
    voxels = voxelize(slidr["points"], voxelization="cylindrical")
    np.testing.assert_array_equal(slidr["coords"], voxels.coords)
    np.testing.assert_array_equal(slidr["inverse"], voxels.inverse)
    points = load_points(stores.index.record(int(stores.index.rows("train")[0]))["lidar_path"])
    intensity = points[in_range(points), 3]  # no augmentation: the points in range, in file order
    np.testing.assert_array_equal(slidr["feats"][:, 0], intensity[voxels.first])
    np.testing.assert_allclose(hvd["feats"][:, 0], intensity[voxelize(hvd["points"]).first] / 255, rtol=1e-6)
