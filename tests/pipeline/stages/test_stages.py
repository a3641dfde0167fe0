"""The per-keyframe stages through ``pipeline.store.runner`` (no Prefect, no Dask): what they
compute, and the incremental, versioned and bad-input behaviour of their stores."""

from __future__ import annotations

import contextlib
import io
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.sensor_data import in_range, load_points
from pipeline.stages import Catalog, correspondences, superpixels
from pipeline.stages.index import ensure_index
from pipeline.store.rowstore import RowStore
from pipeline.store.runner import run_local
from pipeline.store.stores import read_meta
from pipeline.synth import PRESETS
from pipeline.synth.generate import generate
from tests.conftest import SUPERPIXELS, catalog_for, needs_ximgproc

STAGES = ("superpixels", "correspondences", "depth_targets")


def _build(root: Path, dataroot: Path, params: dict | None = None) -> Catalog:
    catalog = Catalog.load(catalog_for(root, dataroot, params=params, stages=True))
    for name in STAGES:
        summary = run_local(catalog, name)
        assert summary.complete and not summary.failed, summary
    return catalog


@pytest.fixture(scope="module")
def built(tiny_root, tmp_path_factory):
    return _build(tmp_path_factory.mktemp("stages"), tiny_root)


def _arrays(path: str) -> dict[str, np.ndarray]:
    store = RowStore.open(path)
    return {name: store.group[name][:] for name in store.group.array_keys()}


def _match_in_order(ours_uv: np.ndarray, devkit_uv: np.ndarray, tol: float) -> np.ndarray:
    """Positions in ``ours_uv`` of the devkit's points (both in file order), each within ``tol``."""
    matched, j = [], 0
    for k, uv in enumerate(ours_uv):
        if j < len(devkit_uv) and np.abs(uv - devkit_uv[j]).max() < tol:
            matched.append(k)
            j += 1
    assert j == len(devkit_uv), f"only {j} of {len(devkit_uv)} devkit points found in order"
    return np.array(matched, dtype=int)


def test_correspondences_agree_with_the_devkit(tiny_root, tmp_path):
    """With the devkit's bounds (1 px margins, 1 m), our pairings are nuscenes-devkit's
    map_pointcloud_to_image points: the same points, in the same order, within 0.01 px. The devkit
    rounds to float32 after every transform step (about 1e-3 px here), so a point closer than
    0.01 px to an image border may fall on either side; no other point may differ. The store holds
    exactly those pairings for the points in range."""
    from nuscenes.nuscenes import NuScenes

    strict = correspondences.CorrespondenceParams(uv_min=1.0, uv_margin=1.0)
    loose = correspondences.CorrespondenceParams(uv_min=0.99, uv_margin=0.99, min_depth_m=0.999)
    catalog = Catalog.load(catalog_for(tmp_path, tiny_root, params={"correspondences": {"uv_min": 1.0, "uv_margin": 1.0}}, stages=True))
    assert run_local(catalog, "correspondences").complete
    store = RowStore.open(catalog.artifact("correspondences").path)
    index, _ = ensure_index(catalog)
    with contextlib.redirect_stdout(io.StringIO()):
        nusc = NuScenes(version="v1.0-mini", dataroot=str(tiny_root), verbose=False)
    compared = borderline = 0
    for row in range(len(index)):
        record = index.record(row)
        points = load_points(record["lidar_path"])
        xyz = points[:, :3].astype(np.float64)
        original = np.flatnonzero(in_range(points))  # filtered index -> file index
        n_in_range, cams = correspondences.read(store, store.row_of(record["token"]))
        assert n_in_range == len(original)
        lidar_token = nusc.get("sample", record["token"])["data"]["LIDAR_TOP"]
        for c, token in enumerate(record["cam_tokens"]):
            uv_dk, depth_dk, _ = nusc.explorer.map_pointcloud_to_image(lidar_token, token, min_dist=1.0)
            args = (correspondences.lidar_to_cameras(record)[c], record["intrinsics"][c], record["image_hw"][c])
            idx_l, uv_l, depth_l = correspondences.project(xyz, *args, loose)
            matched = _match_in_order(uv_l, uv_dk[:2].T, tol=0.01)
            np.testing.assert_allclose(depth_l[matched], depth_dk, atol=1e-4, rtol=0)  # float32: 0.1 mm
            height, width = record["image_hw"][c]
            extra = np.setdiff1d(np.arange(len(idx_l)), matched)
            idx_s = correspondences.project(xyz, *args, strict)[0]
            for k in extra:  # ours but not the devkit's: only at a border, within 0.01 px
                u, v = uv_l[k]
                assert min(abs(u - 1), abs(u - (width - 1)), abs(v - 1), abs(v - (height - 1))) < 0.01 or abs(depth_l[k] - 1) < 1e-3
            borderline += len(np.setxor1d(idx_l[matched], idx_s))
            idx, uv, depth = cams[c]
            kept = np.isin(idx_s, original)
            np.testing.assert_array_equal(original[idx], idx_s[kept])
            full = correspondences.project(xyz, *args, strict)
            np.testing.assert_allclose(uv, full[1][kept], atol=1e-3, rtol=0)
            np.testing.assert_allclose(depth, full[2][kept], rtol=1e-6)
            compared += len(idx)
    assert compared > 10_000 and borderline < compared / 1000


def test_superpixels_are_dense_slic_labels(built, tiny_root):
    store = RowStore.open(built.artifact("superpixels").path)
    index, _ = ensure_index(built)
    params = built.artifact("superpixels").params
    record = index.record(3)
    labels, count = store.read("labels", store.row_of(record["token"])), store.read("count", store.row_of(record["token"]))
    assert labels.shape == (6, *superpixels.sizes(params, (PRESETS["tiny"].image_height, PRESETS["tiny"].image_width))[1])
    for c in range(6):
        assert set(np.unique(labels[c])) == set(range(count[c])) and 20 <= count[c] <= 255
    expected, n = superpixels.label_map(record["cam_paths"][2], params, tuple(record["image_hw"][2]))
    np.testing.assert_array_equal(labels[2], expected)
    assert n == count[2]


@pytest.mark.parametrize("algorithm", [a if a == "skimage_slic" else pytest.param(a, marks=needs_ximgproc) for a in superpixels.ALGORITHMS])
def test_each_superpixel_algorithm_stores_dense_ids_and_counts_in_its_own_store(algorithm, built, tiny_root, tmp_path):
    """Every algorithm fills the same layout: per image dense ids 0..count-1 and the count; the
    stored map is the algorithm's own (recomputed here); each algorithm has its own store."""
    catalog = built if algorithm == SUPERPIXELS else Catalog.load(
        catalog_for(tmp_path, tiny_root, params={"superpixels": {"algorithm": algorithm}}, stages=True)
    )
    artifact = catalog.artifact("superpixels")
    assert artifact.params.algorithm == algorithm
    assert (artifact.path == built.artifact("superpixels").path) == (catalog is built)
    if catalog is not built:
        summary = run_local(catalog, "superpixels")
        assert summary.complete and summary.computed == 8, summary
    store = RowStore.open(artifact.path)
    assert read_meta(artifact.path).params["algorithm"] == algorithm
    index, _ = ensure_index(catalog)
    counts = []
    for row in range(len(index)):
        record = index.record(row)
        labels, count = store.read("labels", store.row_of(record["token"])), store.read("count", store.row_of(record["token"]))
        for c in range(6):
            assert np.array_equal(np.unique(labels[c]), np.arange(count[c])), (row, c)
        counts += count.tolist()
    assert 20 <= min(counts) and max(counts) <= 255, counts
    expected, n = superpixels.label_map(record["cam_paths"][4], artifact.params, tuple(record["image_hw"][4]))
    np.testing.assert_array_equal(labels[4], expected)
    assert n == count[4]


def test_only_the_chosen_algorithms_block_is_fingerprinted(tiny_root, tmp_path):
    def fingerprint(params: dict) -> str:
        return Catalog.load(catalog_for(tmp_path, tiny_root, params={"superpixels": params}, stages=True)).artifact("superpixels").fingerprint

    default = fingerprint({"algorithm": "opencv_slic"})  # the default (the tests' stores may use another)
    assert superpixels.SuperpixelParams().algorithm == "opencv_slic"
    assert fingerprint({"algorithm": "opencv_slic", "skimage_slic": {"compactness": 20.0}}) == default  # not the chosen algorithm
    assert fingerprint({"algorithm": "opencv_slic", "opencv_slic": {"ruler": 20.0}}) != default
    assert fingerprint({"algorithm": "opencv_slico"}) != default != fingerprint({"algorithm": "skimage_slic"})


def test_a_missing_opencv_names_the_package(monkeypatch):
    import sys

    from pipeline.errors import HvdError

    monkeypatch.setitem(sys.modules, "cv2", None)  # as if OpenCV were not installed
    rgb = np.zeros((40, 60, 3), dtype=np.uint8)
    with pytest.raises(HvdError, match="opencv-contrib-python-headless"):
        superpixels.segment(rgb, superpixels.SuperpixelParams(algorithm="opencv_slic"), 60)
    assert superpixels.segment(rgb, superpixels.SuperpixelParams(algorithm="skimage_slic"), 60).shape == (40, 60)


def test_superpixels_follow_the_class_boundaries(built, tiny_root):
    """Boundary recall: most class-boundary pixels of the ground truth lie within 2 px of a
    superpixel boundary (SLIC respects the image content, not just a grid)."""
    from PIL import Image

    store = RowStore.open(built.artifact("superpixels").path)
    index, _ = ensure_index(built)
    recalls = []
    for row in range(len(index)):
        record = index.record(row)
        labels = store.read("labels", store.row_of(record["token"]))
        for c, token in enumerate(record["cam_tokens"]):
            truth = np.array(Image.open(tiny_root / "synth" / "labels" / f"{token}.png"))
            recalls.append(superpixels.boundary_recall(superpixels.densify(labels[c], truth.shape)[0], truth, 2))
    grid = superpixels.boundary_recall(_grid_labels(truth.shape, 150), truth, 2)
    assert np.mean(recalls) > 0.7 and np.mean(recalls) > grid + 0.1, (np.mean(recalls), grid)


def _grid_labels(shape, n: int) -> np.ndarray:
    side = int(np.sqrt(shape[0] * shape[1] / n))
    rows, cols = np.arange(shape[0])[:, None] // side, np.arange(shape[1])[None, :] // side
    return rows * 1000 + cols


def test_quality_metrics_by_hand():
    truth = np.array([[0, 0, 1, 1]] * 4)
    aligned = np.array([[5, 5, 7, 7]] * 4)
    straddling = np.array([[5, 5, 5, 7]] * 4)
    assert superpixels.boundary_recall(aligned, truth, 0) == 1.0
    assert superpixels.boundary_recall(straddling, truth, 0) == 0.0
    assert superpixels.boundary_recall(straddling, truth, 1) == 1.0
    assert superpixels.achievable_accuracy(aligned, truth) == 1.0
    assert superpixels.achievable_accuracy(straddling, truth) == 0.75


def test_growing_the_dataset_computes_only_the_new_keyframes(tiny_copy, tmp_path):
    catalog = _build(tmp_path, tiny_copy)
    before = {name: _arrays(catalog.artifact(name).path) for name in STAGES}
    generate(tiny_copy, replace(PRESETS["tiny"], n_scenes=3), seed=0, workers=1)
    catalog = Catalog.load(catalog.path)
    for name in STAGES:
        summary = run_local(catalog, name)
        assert (summary.computed, summary.skipped, summary.total) == (4, 8, 12), summary
        assert summary.complete
        after = _arrays(catalog.artifact(name).path)
        for key, old in before[name].items():  # the first 8 rows are untouched
            np.testing.assert_array_equal(after[key][: len(old)], old)


def test_changing_a_parameter_makes_a_new_store_and_keeps_the_old(built, tmp_path):
    old_path = built.artifact("superpixels").path
    old = _arrays(old_path)
    changed = Catalog.load(catalog_for(tmp_path, built.source().dataroot, params={"superpixels": {SUPERPIXELS: {"n_segments": 60}}}, stages=True))
    new_path = changed.artifact("superpixels").path
    assert new_path != old_path
    assert run_local(changed, "superpixels").complete
    assert RowStore.open(new_path).read("count", 0).max() < old["count"][0].max()
    for key, value in _arrays(old_path).items():
        np.testing.assert_array_equal(value, old[key])
    assert read_meta(old_path).complete


def test_bad_files_fail_their_row_only_and_a_rerun_computes_just_that_row(tiny_copy, tmp_path):
    catalog = Catalog.load(catalog_for(tmp_path, tiny_copy, stages=True))
    index, _ = ensure_index(catalog)
    lidar_row, image_row = index.record(2), index.record(5)
    lidar = lidar_row["lidar_path"]
    saved = lidar.read_bytes()
    lidar.unlink()
    image = image_row["cam_paths"][4]
    good_image = image.read_bytes()
    image.write_bytes(good_image[: len(good_image) // 3])

    sp, corr = run_local(catalog, "superpixels"), run_local(catalog, "correspondences")
    assert (sp.computed, len(sp.failed), sp.complete) == (7, 1, False)
    assert image_row["token"] in sp.failed[0] and str(image) in sp.failed[0]
    assert (corr.computed, len(corr.failed), corr.complete) == (7, 1, False)
    assert lidar_row["token"] in corr.failed[0] and str(lidar) in corr.failed[0] and "missing" in corr.failed[0]
    assert not read_meta(catalog.artifact("correspondences").path).complete
    depth = run_local(catalog, "depth_targets")
    assert len(depth.failed) == 1 and lidar_row["token"] in depth.failed[0] and str(lidar) in depth.failed[0]

    lidar.write_bytes(saved)
    image.write_bytes(good_image)
    for name in STAGES:
        summary = run_local(catalog, name)
        assert (summary.computed, summary.skipped, summary.complete) == (1, 7, True), summary
