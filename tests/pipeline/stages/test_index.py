"""The sample index: one row per keyframe, values equal to the devkit's, splits, freshness, and
clear errors for every kind of bad input."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from pipeline.data.geometry import rigid
from pipeline.data.source import CAMERAS
from pipeline.data.splits import seeded_split
from pipeline.errors import SourceError
from pipeline.stages import Catalog
from pipeline.stages.index import MAX_SWEEPS, ensure_index, problems_error
from tests.conftest import catalog_for


@pytest.fixture(scope="module")
def built(tiny_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("index")
    catalog = Catalog.load(catalog_for(root, tiny_root))
    index, was_built = ensure_index(catalog)
    assert was_built
    return catalog, index


def test_one_row_per_keyframe_with_devkit_values(built, tiny_root):
    from nuscenes.nuscenes import NuScenes

    _, index = built
    with contextlib.redirect_stdout(io.StringIO()):
        nusc = NuScenes(version="v1.0-mini", dataroot=str(tiny_root), verbose=False)
    assert len(index) == len(nusc.sample)
    assert sorted(index.tokens) == sorted(s["token"] for s in nusc.sample)
    for row in range(len(index)):
        rec = index.record(row)
        sample = nusc.get("sample", rec["token"])
        lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        assert rec["lidar_path"] == tiny_root / lidar["filename"] and rec["lidar_path"].exists()
        assert rec["lidar_timestamp"] == lidar["timestamp"]
        cs = nusc.get("calibrated_sensor", lidar["calibrated_sensor_token"])
        np.testing.assert_allclose(rec["lidar_to_ego"], rigid(np.array(cs["rotation"]), cs["translation"]), atol=1e-12)
        assert rec["lidar_points"] * 20 == rec["lidar_path"].stat().st_size
        for i, channel in enumerate(CAMERAS):
            cam = nusc.get("sample_data", sample["data"][channel])
            pose = nusc.get("ego_pose", cam["ego_pose_token"])
            ccs = nusc.get("calibrated_sensor", cam["calibrated_sensor_token"])
            assert rec["cam_paths"][i] == tiny_root / cam["filename"]
            assert rec["cam_timestamps"][i] == cam["timestamp"]
            np.testing.assert_allclose(rec["ego_to_global_cam"][i], rigid(np.array(pose["rotation"]), pose["translation"]), atol=1e-12)
            np.testing.assert_allclose(rec["cam_to_ego"][i], rigid(np.array(ccs["rotation"]), ccs["translation"]), atol=1e-12)
            np.testing.assert_array_equal(rec["intrinsics"][i], np.array(ccs["camera_intrinsic"]))
            assert tuple(rec["image_hw"][i]) == (cam["height"], cam["width"])
    # rows are in scene order, then time order
    scenes = index.column("scene")
    times = index.column("timestamp")
    assert list(scenes) == sorted(scenes)
    assert all(np.all(np.diff(times[scenes == s]) > 0) for s in set(scenes))


def test_sweeps_are_the_nearest_lidar_sweeps_of_the_scene(built, tiny_root):
    """Each keyframe lists the MAX_SWEEPS other LIDAR_TOP sweeps of its scene nearest in time
    (found here by brute force over the whole table), nearest first, with the devkit's poses."""
    from nuscenes.nuscenes import NuScenes

    _, index = built
    with contextlib.redirect_stdout(io.StringIO()):
        nusc = NuScenes(version="v1.0-mini", dataroot=str(tiny_root), verbose=False)
    scene_of = {s["token"]: s["scene_token"] for s in nusc.sample}
    for row in range(len(index)):
        rec = index.record(row)
        sample = nusc.get("sample", rec["token"])
        others = [
            sd for sd in nusc.sample_data
            if sd["channel"] == "LIDAR_TOP" and scene_of[sd["sample_token"]] == sample["scene_token"] and sd["token"] != sample["data"]["LIDAR_TOP"]
        ]
        nearest = sorted(others, key=lambda sd: (abs(sd["timestamp"] - rec["lidar_timestamp"]), sd["timestamp"]))[:MAX_SWEEPS]
        assert len(nearest) == MAX_SWEEPS  # the tiny scenes have 31 sweeps each
        assert rec["sweep_paths"] == [tiny_root / sd["filename"] for sd in nearest]
        dt = np.abs(rec["sweep_timestamps"] - rec["lidar_timestamp"])
        assert dt.min() > 0 and np.all(np.diff(dt) >= 0)
        assert rec["sweep_lidar_to_ego"].shape == rec["sweep_ego_to_global"].shape == (MAX_SWEEPS, 4, 4)
        for k, sd in enumerate(nearest):
            pose, cs = nusc.get("ego_pose", sd["ego_pose_token"]), nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            assert rec["sweep_timestamps"][k] == sd["timestamp"] and rec["sweep_paths"][k].exists()
            np.testing.assert_allclose(rec["sweep_ego_to_global"][k], rigid(np.array(pose["rotation"]), pose["translation"]), atol=1e-12)
            np.testing.assert_allclose(rec["sweep_lidar_to_ego"][k], rigid(np.array(cs["rotation"]), cs["translation"]), atol=1e-12)
    assert [len(t) for t in index.column("sweep_timestamps")] == [MAX_SWEEPS] * len(index)


def test_the_row_hash_changes_with_a_sweep(tiny_copy, tmp_path):
    catalog = Catalog.load(catalog_for(tmp_path, tiny_copy))
    index, _ = ensure_index(catalog)
    before = list(index.column("row_hash"))
    sweep = index.record(1)["sweep_paths"][0]
    records = _table(tiny_copy, "sample_data")
    token = next(sd["ego_pose_token"] for sd in records if tiny_copy / sd["filename"] == sweep)
    poses = _table(tiny_copy, "ego_pose")
    next(p for p in poses if p["token"] == token)["translation"][0] += 0.25
    (tiny_copy / "v1.0-mini" / "ego_pose.json").write_text(json.dumps(poses))
    index, rebuilt = ensure_index(catalog)
    assert rebuilt
    uses = [sweep in index.record(row)["sweep_paths"] for row in range(len(index))]
    changed = [a != b for a, b in zip(before, index.column("row_hash"))]
    assert changed == uses and uses[1] and not all(uses)


def test_a_dataset_without_sweeps_indexes_with_empty_lists(tiny_copy, tmp_path):
    """Only keyframes (no other LIDAR_TOP sample_data, no prev/next chain): the index has empty
    sweep lists, and depth targets asked for 3 sweeps use the one there is, saying so."""
    from pipeline.stages import depth_targets
    from pipeline.store.runner import run_local

    records = [sd for sd in _table(tiny_copy, "sample_data") if sd["is_key_frame"] or "/LIDAR_TOP/" not in sd["filename"]]
    for sd in records:
        if "/LIDAR_TOP/" in sd["filename"]:
            sd["prev"] = sd["next"] = ""
    (tiny_copy / "v1.0-mini" / "sample_data.json").write_text(json.dumps(records))
    catalog = Catalog.load(catalog_for(tmp_path, tiny_copy, params={"depth_targets": {"sweeps": 3}}, stages=True))
    index, _ = ensure_index(catalog)
    assert len(index) == len(_table(tiny_copy, "sample")) and problems_error(index) is None
    record = index.record(0)
    assert record["sweep_paths"] == [] and record["sweep_timestamps"].shape == (0,) and record["sweep_ego_to_global"].shape == (0, 4, 4)
    summary = run_local(catalog, "depth_targets")
    assert summary.complete and len(summary.notes) == 1
    assert f"{len(index)} of {len(index)} keyframes have fewer" in summary.notes[0] and "as few as 0" in summary.notes[0]
    single = depth_targets.compute(record, depth_targets.DepthTargetParams())
    np.testing.assert_array_equal(depth_targets.compute(record, depth_targets.DepthTargetParams(sweeps=3))["uvd"], single["uvd"])


def test_split_is_by_scene_and_seeded(built):
    """The pretraining split is the source's seeded one, by scene; the official column is the
    devkit's placement of each scene, never the seeded split; the meta names the kind and keeps the
    scene table's order (SLidR's label fractions walk it)."""
    _, index = built
    scenes, splits = index.column("scene"), index.splits
    for scene in set(scenes):
        assert len(set(splits[scenes == scene])) == 1
    assert set(splits) == {"train", "val"}
    assert len(index.rows("train")) + len(index.rows("val")) == len(index)
    expected = seeded_split(sorted(set(scenes)), 0.25, 0, "v1.0-mini")
    assert all(splits[i] == expected[s][0] for i, s in enumerate(scenes))
    official = dict(zip(scenes, index.column("official_split")))
    assert official == {"scene-0061": "mini_train", "scene-0103": "mini_val"}
    assert index.meta.extra["split_kind"] == "seeded" and index.meta.extra["scene_table"] == ["scene-0061", "scene-0103"]


def test_index_is_reused_until_the_tables_change(built):
    catalog, index = built
    again, was_built = ensure_index(catalog)
    assert not was_built and again.tokens == index.tokens
    table = Path(catalog.source().dataroot) / "v1.0-mini" / "scene.json"
    stat = table.stat()
    try:
        os.utime(table, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        _, rebuilt = ensure_index(catalog)
        assert rebuilt
    finally:
        os.utime(table, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _run(catalog: Path):
    return CliRunner().invoke(app, ["prep", "index", "--catalog", str(catalog)], env={"COLUMNS": "200"})


def _table(root: Path, name: str) -> list[dict]:
    return json.loads((root / "v1.0-mini" / f"{name}.json").read_text())


def _first_sample(root: Path) -> dict:
    return _table(root, "sample")[0]


def _sample_file(root: Path, sample_token: str, channel: str) -> Path:
    for sd in _table(root, "sample_data"):
        if sd["sample_token"] == sample_token and sd["is_key_frame"] and f"/{channel}/" in sd["filename"]:
            return root / sd["filename"]
    raise AssertionError(channel)


def _assert_clean_error(result, *needles: str) -> None:
    out = result.output
    assert result.exit_code == 2, out
    assert "error:" in out and "Traceback" not in out
    for needle in needles:
        assert needle in out.replace("\n", ""), (needle, out)


def test_dataroot_that_does_not_exist(tmp_path):
    _assert_clean_error(_run(catalog_for(tmp_path, tmp_path / "nowhere")), str(tmp_path / "nowhere"), "does not exist")


def test_version_folder_missing(tiny_root, tmp_path):
    _assert_clean_error(_run(catalog_for(tmp_path, tiny_root, version="v1.0-trainval")), "v1.0-trainval", "version folder missing", "v1.0-mini")


def test_table_that_fails_to_parse(tiny_copy, tmp_path):
    table = tiny_copy / "v1.0-mini" / "sample_annotation.json"
    table.write_text(table.read_text()[:5000])
    _assert_clean_error(_run(catalog_for(tmp_path, tiny_copy)), str(table), "not valid JSON", "line")


def test_truncated_point_cloud(tiny_copy, tmp_path):
    sample = _first_sample(tiny_copy)
    lidar = _sample_file(tiny_copy, sample["token"], "LIDAR_TOP")
    lidar.write_bytes(lidar.read_bytes()[:-7])
    _assert_clean_error(_run(catalog_for(tmp_path, tiny_copy)), str(lidar), sample["token"], "truncated")


def test_missing_image(tiny_copy, tmp_path):
    sample = _first_sample(tiny_copy)
    image = _sample_file(tiny_copy, sample["token"], "CAM_BACK_LEFT")
    image.unlink()
    _assert_clean_error(_run(catalog_for(tmp_path, tiny_copy)), str(image), sample["token"], "missing")


def test_allow_missing_indexes_the_complete_keyframes_only(tiny_copy, tmp_path):
    sample = _first_sample(tiny_copy)
    image = _sample_file(tiny_copy, sample["token"], "CAM_FRONT")
    image.write_bytes(image.read_bytes()[:1000])  # a JPEG cut short
    catalog = Catalog.load(catalog_for(tmp_path, tiny_copy, params={"index": {"allow_missing": True}}))
    index, _ = ensure_index(catalog)
    assert sample["token"] not in index.tokens
    assert len(index) == len(_table(tiny_copy, "sample")) - 1
    problems = index.meta.extra["problems"]
    assert len(problems) == 1 and "truncated JPEG" in problems[0] and sample["token"] in problems[0]
    assert problems_error(index) is None  # allowed: a warning, not an error


def test_bad_files_keep_their_row_and_are_rechecked(tiny_copy, tmp_path):
    sample = _first_sample(tiny_copy)
    image = _sample_file(tiny_copy, sample["token"], "CAM_FRONT")
    good = image.read_bytes()
    image.write_bytes(good[:1000])
    catalog = Catalog.load(catalog_for(tmp_path, tiny_copy))
    index, _ = ensure_index(catalog)
    assert sample["token"] in index.tokens and len(index) == len(_table(tiny_copy, "sample"))
    error = problems_error(index)
    assert isinstance(error, SourceError) and str(image) in str(error) and sample["token"] in str(error)
    image.write_bytes(good)  # fixed: the next use re-checks and clears the problem
    index, rebuilt = ensure_index(catalog)
    assert rebuilt and problems_error(index) is None and not index.meta.extra["problems"]
