"""Augmentation in feature space: the matrices by hand, and the geometry contract -- a LiDAR point
paired with a pixel, moved into the augmented image by the pairing path and lifted back by the LSS
geometry at its true depth, lands within 1 cm of the augmented point, in the same BEV cell the
student gives it, under every augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import frustum
from pipeline.data.sensor_data import in_range, load_points
from pipeline.stages import Catalog, correspondences
from pipeline.stages.index import ensure_index
from pipeline.store.rowstore import RowStore
from pipeline.store.runner import run_local
from pipeline.train import augment
from pipeline.train.augment import AugmentConfig, image_matrix, lidar_matrix
from tests.conftest import catalog_for

OUT_HW = (224, 416)


def test_image_matrix_by_hand():
    full = augment.full_image_matrix((900, 1600), OUT_HW)
    corners = augment.apply_image_matrix(full, np.array([[-0.5, -0.5], [1599.5, 899.5], [799.5, 449.5]]))
    np.testing.assert_allclose(corners, [[-0.5, -0.5], [415.5, 223.5], [207.5, 111.5]])
    # a 400 x 215.38 crop whose top-left corner is at pixel edge (99.5, 49.5): scale 416/400 = 1.04
    crop = image_matrix((99.5, 49.5, 400.0, 224 / 1.04), OUT_HW)
    np.testing.assert_allclose(augment.apply_image_matrix(crop, np.array([[99.5, 49.5], [100.0, 50.0]])), [[-0.5, -0.5], [0.02, 0.02]])
    flipped = image_matrix((99.5, 49.5, 400.0, 224 / 1.04), OUT_HW, flip=True)
    np.testing.assert_allclose(augment.apply_image_matrix(flipped, np.array([[100.0, 50.0]])), [[415 - 0.02, 0.02]])


def test_lidar_matrix_by_hand():
    m = lidar_matrix(np.pi / 2, 2.0, (1.0, 0.0, 0.5), flip_x=True)
    p = np.array([1.0, 0.0, 0.0, 1.0])
    # rotate (1,0,0) -> (0,1,0); + t -> (1,1,0.5); * 2 -> (2,2,1); flip x -> (-2,2,1)
    np.testing.assert_allclose(m @ p, [-2.0, 2.0, 1.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(lidar_matrix(flip_y=True) @ p + [0, 0, 0, 0], [1.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(lidar_matrix(flip_y=True) @ [0.0, 3.0, 0.0, 1.0], [0.0, -3.0, 0.0, 1.0])


def test_crop_retries_are_bounded_and_fall_back_to_the_full_image():
    rng = np.random.default_rng(0)
    config = AugmentConfig(flip_horizontal=0.0, crop_retries=5)
    empty = augment.sample_crop((900, 1600), OUT_HW, np.zeros((0, 2)), config, rng)
    np.testing.assert_allclose(empty, augment.full_image_matrix((900, 1600), OUT_HW))
    uv = rng.uniform(0, [1600, 900], size=(5000, 2))
    cropped = augment.sample_crop((900, 1600), OUT_HW, uv, config, rng)
    kept = augment.inside(augment.apply_image_matrix(cropped, uv), OUT_HW).sum()
    assert kept > 1024 and not np.allclose(cropped, augment.full_image_matrix((900, 1600), OUT_HW))


def test_drop_cuboid_is_undone_when_a_camera_would_lose_its_pairings():
    rng = np.random.default_rng(1)
    xyz = rng.uniform(-10, 10, size=(2000, 3))
    keep = augment.drop_cuboid(xyz, lambda k: np.full(6, k.sum()), AugmentConfig(min_pairings_per_camera=0, cuboid_max_ratio=0.9), rng)
    assert 0 < (~keep).sum() < len(xyz)
    removed = xyz[~keep]
    assert np.all(np.abs(removed - removed.mean(axis=0)) < 10)  # one box of points
    undone = augment.drop_cuboid(xyz, lambda k: np.full(6, k.sum()), AugmentConfig(min_pairings_per_camera=len(xyz), cuboid_max_ratio=0.9), rng)
    assert undone.all()


def test_resampling_maps_follow_the_matrix():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(3, 14, 26)).astype(np.float32)  # the cached grid of a 56x104 image at stride 4
    same = augment.sample_grid(augment.full_image_matrix((90, 160), (56, 104)), (90, 160), (56, 104), stride=4)
    np.testing.assert_allclose(augment.resample_features(features, same), features, atol=1e-5)
    flip = image_matrix((-0.5, -0.5, 160.0, 90.0), (56, 104), flip=True)
    flipped = augment.resample_features(features, augment.sample_grid(flip, (90, 160), (56, 104), stride=4))
    np.testing.assert_allclose(flipped, features[:, :, ::-1], atol=1e-5)
    labels = np.repeat(np.arange(26)[None], 14, axis=0) + 5  # ids 5..30 by column
    crop = image_matrix((-0.5, -0.5, 80.0, 45.0), (14, 26))  # the left half of the image, upsampled x2
    dense, count = augment.resample_labels(labels, augment.sample_grid(crop, (90, 160), (14, 26)))
    assert count == 13 and dense.min() == 0 and dense.max() == 12


@pytest.fixture(scope="module")
def pairs(tiny_root, tmp_path_factory):
    catalog = Catalog.load(catalog_for(tmp_path_factory.mktemp("augment"), tiny_root, stages=True))
    assert run_local(catalog, "correspondences").complete
    return catalog


AUGMENTATIONS = {
    "rotation": AugmentConfig(scale=(1, 1), translation_std_m=0, flip_x=0, flip_y=0, crop_scale=(1, 1), crop_ratio=(16 / 9, 16 / 9), flip_horizontal=0),
    "scale": AugmentConfig(rotation_deg=0, translation_std_m=0, flip_x=0, flip_y=0, crop_scale=(1, 1), crop_ratio=(16 / 9, 16 / 9), flip_horizontal=0),
    "translation": AugmentConfig(rotation_deg=0, scale=(1, 1), flip_x=0, flip_y=0, crop_scale=(1, 1), crop_ratio=(16 / 9, 16 / 9), flip_horizontal=0),
    "axis flips": AugmentConfig(rotation_deg=0, scale=(1, 1), translation_std_m=0, flip_x=1, flip_y=1, crop_scale=(1, 1), crop_ratio=(16 / 9, 16 / 9), flip_horizontal=0),
    "crops": AugmentConfig(rotation_deg=0, scale=(1, 1), translation_std_m=0, flip_x=0, flip_y=0, flip_horizontal=0, crop_min_pairings=50),
    "horizontal flips": AugmentConfig(rotation_deg=0, scale=(1, 1), translation_std_m=0, flip_x=0, flip_y=0, crop_scale=(1, 1), crop_ratio=(16 / 9, 16 / 9), flip_horizontal=1),
    "all at once": AugmentConfig(crop_min_pairings=50),
}


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
def test_geometry_contract(pairs, name):
    config = AUGMENTATIONS[name]
    store = RowStore.open(pairs.artifact("correspondences").path)
    index, _ = ensure_index(pairs)
    rng = np.random.default_rng(sorted(AUGMENTATIONS).index(name))
    checked = borderline = 0
    for row in rng.choice(len(index), size=4, replace=False):
        record = index.record(int(row))
        points = load_points(record["lidar_path"])
        xyz = points[in_range(points), :3].astype(np.float64)
        _, cams = correspondences.read(store, store.row_of(record["token"]))
        m = augment.sample_lidar_matrix(config, rng)
        augmented = xyz @ m[:3, :3].T + m[:3, 3]
        t = frustum.cam_to_lidar_aug(m, record["lidar_to_ego"], record["ego_to_global_lidar"], record["ego_to_global_cam"], record["cam_to_ego"])
        for c, (idx, uv, depth) in enumerate(cams):
            a = augment.sample_crop(tuple(record["image_hw"][c]), OUT_HW, uv.astype(np.float64), config, rng)
            uv_aug = augment.apply_image_matrix(a, uv.astype(np.float64))
            keep = augment.inside(uv_aug, OUT_HW)
            lifted = frustum.unproject(
                torch.from_numpy(uv_aug[keep]),
                torch.from_numpy(depth[keep].astype(np.float64)),
                torch.from_numpy(a),
                torch.from_numpy(record["intrinsics"][c]),
                torch.from_numpy(t[c]),
            ).numpy()
            truth = augmented[idx[keep]]
            error = np.linalg.norm(lifted - truth, axis=1)
            assert error.max() < 0.01, (name, c, error.max())
            teacher_cell = frustum.bev_cell(torch.from_numpy(lifted)).numpy()
            student_cell = frustum.voxel_bev_cell(torch.from_numpy(np.floor(truth[:, :2] / frustum.VOXEL_SIZE_M).astype(np.int64))).numpy()
            # pairings are stored in float32 (a few micrometres of lifting error): a point closer than
            # 10 um to a cell border may fall on either side, every other point must agree
            frac = np.mod(truth[:, :2] / frustum.BEV_CELL_M, 1.0)
            clear = (np.minimum(frac, 1 - frac) * frustum.BEV_CELL_M > 1e-5).all(axis=1)
            compare = (teacher_cell >= 0).all(axis=1) & clear
            np.testing.assert_array_equal(teacher_cell[compare], student_cell[compare])
            checked += int(keep.sum())
            borderline += int((~clear).sum())
    # the synthetic LiDAR fires exactly at azimuths 0/90/180/270 degrees: without rotation those points lie on
    # x = 0 or y = 0, which are cell borders (about 0.3 % of points); real sweeps have no such rows
    assert checked > 1000 and borderline < checked / 100
