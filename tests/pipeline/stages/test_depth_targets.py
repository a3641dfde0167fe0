"""The depth-target stage: every LiDAR point a camera sees at 1-60 m (u, v, depth), from the
keyframe's sweep or K motion-compensated sweeps, and the min-pooling onto an augmented grid."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.classes import LIDARSEG_INDEX
from pipeline.data.sensor_data import load_points
from pipeline.stages import Catalog, correspondences, depth_targets
from pipeline.stages.depth_targets import DepthTargetParams
from pipeline.stages.index import ensure_index
from pipeline.store.rowstore import RowStore
from pipeline.store.runner import run_local
from pipeline.train import augment
from tests.conftest import catalog_for


@pytest.fixture(scope="module")
def index(tiny_stores):
    return ensure_index(tiny_stores)[0]


def test_pooling_by_hand_with_a_crop_and_a_flip():
    # a 16 x 16 image; the crop u in [3.5, 11.5), v in [-0.5, 7.5) resized to 8 x 8 (scale 1) and
    # flipped: u' = 7 - (u - 4) = 11 - u, v' = v; cells of 4 x 4 pixels: a 2 x 2 grid
    a = augment.image_matrix((3.5, -0.5, 8.0, 8.0), (8, 8), flip=True)
    np.testing.assert_allclose(augment.apply_image_matrix(a, np.array([[10.0, 2.0], [4.0, 5.0]])), [[1.0, 2.0], [7.0, 5.0]])
    uv = np.array([[10, 2], [8, 3], [7.5, 0], [4, 5], [6, 7.4], [11.6, 1], [3.4, 1], [9, 8.6]])
    depth = np.array([5.0, 3.0, 9.0, 2.0, 4.0, 1.5, 1.2, 1.1])
    # u' = 1, 3 -> cell (0, 0), min(5, 3); u' = 3.5 is a cell border: (u' + 0.5) / 4 = 1 -> (0, 1);
    # u' = 7, 5 with v' = 5, 7.4 -> (1, 1), min(2, 4); u' = -0.6, u' = 7.6 and v' = 8.6 are outside
    grid = depth_targets.min_depth_grid(augment.apply_image_matrix(a, uv), depth, (8, 8), 4)
    assert grid.dtype == np.float32
    np.testing.assert_array_equal(grid, [[3.0, 9.0], [0.0, 2.0]])


def _in_order(values: np.ndarray, wanted: np.ndarray, tol: float) -> int:
    """How many rows of ``wanted`` appear, in order, among the rows of ``values`` (within ``tol``)."""
    j = 0
    for row in values:
        if j < len(wanted) and np.abs(row - wanted[j]).max() < tol:
            j += 1
    return j


def test_one_sweep_holds_every_pairing_of_the_correspondences(tiny_stores, index):
    """At K = 1 the store holds each camera's points at 1-60 m in file order, with no point-range
    filter: the correspondences below 60 m (points in range only) are a subsequence of them."""
    corr = RowStore.open(tiny_stores.artifact("correspondences").path)
    store = RowStore.open(tiny_stores.artifact("depth_targets").path)
    extra = 0
    for row in (0, 5):
        record = index.record(row)
        _, pairs = correspondences.read(corr, corr.row_of(record["token"]))
        targets = depth_targets.read(store, store.row_of(record["token"]))
        for c, ((_, uv_p, d_p), (uv_t, d_t)) in enumerate(zip(pairs, targets)):
            height, width = record["image_hw"][c]
            assert ((d_t >= 1.0) & (d_t < 60.0)).all() and uv_t.dtype == np.float32
            assert (uv_t >= -0.5).all() and (uv_t[:, 0] < width - 0.5).all() and (uv_t[:, 1] < height - 0.5).all()
            near = d_p < 60.0
            wanted = np.column_stack([uv_p, d_p])[near]
            assert _in_order(np.column_stack([uv_t, d_t]), wanted, tol=1e-3) == len(wanted) > 100
            extra += len(d_t) - len(wanted)
        np.testing.assert_array_equal(depth_targets.compute(record, DepthTargetParams())["counts"], [len(d) for _, d in targets])
    assert extra > 0  # points beyond the point range (e.g. above z = 3 m) label cells too


def test_more_sweeps_add_points_after_the_keyframe_sweep(index):
    record = index.record(1)
    one = depth_targets.cameras(depth_targets.compute(record, DepthTargetParams()))
    three = depth_targets.cameras(depth_targets.compute(record, DepthTargetParams(sweeps=3)))
    for (uv1, d1), (uv3, d3) in zip(one, three):
        assert len(d3) > len(d1)
        np.testing.assert_array_equal(uv3[: len(d1)], uv1)  # each camera: the keyframe's points first
        np.testing.assert_array_equal(d3[: len(d1)], d1)


def _one_sweep(record: dict, j: int, ego_to_global: np.ndarray | None = None) -> dict:
    """The record with only its ``j``-th neighbouring sweep, optionally at another ego pose."""
    pose = record["sweep_ego_to_global"][j : j + 1] if ego_to_global is None else ego_to_global[None]
    return {**record, "sweep_paths": record["sweep_paths"][j : j + 1], "sweep_lidar_to_ego": record["sweep_lidar_to_ego"][j : j + 1], "sweep_ego_to_global": pose}


def _tree_disagreement(record: dict) -> float:
    """Median relative difference between the depth of the neighbouring sweep's points and the
    keyframe's nearest depth in the same 2 x 2-pixel cell, over the cells whose nearest keyframe
    point is a tree (lidarseg static.vegetation)."""
    points = load_points(record["lidar_path"])[:, :3].astype(np.float64)
    trees = np.fromfile(record["lidarseg_path"], dtype=np.uint8) == LIDARSEG_INDEX["static.vegetation"]
    transforms = correspondences.lidar_to_cameras(record)
    both = depth_targets.cameras(depth_targets.compute(record, DepthTargetParams(sweeps=2)))
    errors = []
    for c, (uv, depth) in enumerate(both):
        image_hw = tuple(record["image_hw"][c])
        idx, uv_key, d_key = correspondences.project(points, transforms[c], record["intrinsics"][c], image_hw, DepthTargetParams())
        np.testing.assert_array_equal(depth[: len(d_key)], d_key.astype(np.float32))  # the keyframe's points first
        nearest = depth_targets.min_depth_grid(uv_key, d_key, image_hw, 2)
        tree_cells = (nearest > 0) & (nearest == depth_targets.min_depth_grid(uv_key[trees[idx]], d_key[trees[idx]], image_hw, 2))
        cell = np.floor((uv[len(d_key) :].astype(np.float64) + 0.5) / 2).astype(int)  # the sweep's points
        ok = (cell[:, 0] < nearest.shape[1]) & (cell[:, 1] < nearest.shape[0])
        on_tree = tree_cells[cell[ok, 1], cell[ok, 0]]
        ref = nearest[cell[ok, 1], cell[ok, 0]][on_tree]
        errors.append(np.abs(depth[len(d_key) :][ok][on_tree] - ref) / ref)
    errors = np.concatenate(errors)
    assert len(errors) > 300
    return float(np.median(errors))


def test_neighbouring_sweeps_are_motion_compensated(index):
    """A static world seen from a moving car. The synthetic street's ground and facades look the
    same from anywhere along the road (a sweep taken 2 m further sees the same ranges), so only
    static structure that breaks that symmetry shows the ego motion: the trees. A sweep 0.25-0.5 s
    from the keyframe, compensated through its own ego pose, lands on the keyframe's trees (median
    depth difference per cell under 1 %); the same sweep left at the keyframe's pose, as if the
    compensation were dropped, misses them by far more."""
    for row in (0, 5):
        record = index.record(row)
        far = int(np.argmax(np.abs(record["sweep_timestamps"] - record["lidar_timestamp"])))
        travel_m = np.linalg.norm(record["sweep_ego_to_global"][far][:3, 3] - record["ego_to_global_lidar"][:3, 3])
        assert travel_m > 1.0  # the car moved between the two sweeps
        compensated = _tree_disagreement(_one_sweep(record, far))
        uncompensated = _tree_disagreement(_one_sweep(record, far, record["ego_to_global_lidar"]))
        assert compensated < 0.01 and uncompensated > 0.05 and uncompensated > 10 * compensated, (compensated, uncompensated)


def test_a_missing_sweep_fails_its_keyframe_only_and_names_the_file(tiny_copy, tmp_path):
    catalog = Catalog.load(catalog_for(tmp_path, tiny_copy, params={"depth_targets": {"sweeps": 3}}, stages=True))
    index, _ = ensure_index(catalog)
    record = index.record(2)
    sweep = record["sweep_paths"][0]  # the nearest: no other keyframe's two nearest
    sweep.unlink()
    summary = run_local(catalog, "depth_targets")
    assert (summary.computed, len(summary.failed), summary.complete) == (len(index) - 1, 1, False)
    message = summary.failed[0]
    assert record["token"] in message and str(sweep) in message and "missing" in message and "sweeps" in message
    assert "Traceback" not in message
    assert depth_targets.compute(record, DepthTargetParams())["counts"].sum() > 0  # K = 1 never reads sweeps
