"""Issue 13's probes of the dataset a source points at, done as an adversarial user did them, each
asserting the new behaviour: a path that leaves the dataroot, non-finite LiDAR values, a file fixed
or replaced after a run, bad calibrations and ego poses, duplicate tokens, a scene without
keyframes, a missing lidarseg file. Each fails its keyframes (or the index, where a whole table is
wrong) with the file and token named, and everything else is still computed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from pipeline.errors import SourceError, StoreError
from pipeline.stages import Catalog
from pipeline.stages.index import ensure_index, problems_error
from pipeline.store.runner import run_local
from tests.conftest import catalog_for

TABLES = "v1.0-mini"


def _table(root: Path, name: str) -> list[dict]:
    return json.loads((root / TABLES / f"{name}.json").read_text())


def _write_table(root: Path, name: str, records: list[dict]) -> None:
    (root / TABLES / f"{name}.json").write_text(json.dumps(records))


def _keyframe_data(root: Path, channel: str) -> dict:
    """The first keyframe's sample_data record of ``channel``."""
    first = _table(root, "sample")[0]["token"]
    for sd in _table(root, "sample_data"):
        if sd["sample_token"] == first and sd["is_key_frame"] and f"/{channel}/" in sd["filename"]:
            return sd
    raise AssertionError(channel)


def _set_filename(root: Path, token: str, filename: str) -> None:
    records = _table(root, "sample_data")
    for sd in records:
        if sd["token"] == token:
            sd["filename"] = filename
    _write_table(root, "sample_data", records)


def _prep_index(catalog: Path):
    return CliRunner().invoke(app, ["prep", "index", "--catalog", str(catalog)], env={"COLUMNS": "250"})


# --- paths stay inside the dataroot -----------------------------------------------------------------


@pytest.mark.parametrize("escape", ["dotdot", "absolute", "symlink"])
def test_a_path_outside_the_dataroot_is_refused_and_never_computed(tiny_copy, tmp_path, escape):
    cam = _keyframe_data(tiny_copy, "CAM_FRONT")
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = outside / "evil.jpg"
    shutil.copy(tiny_copy / cam["filename"], evil)  # a valid image: only the path is wrong
    if escape == "dotdot":
        named = os.path.relpath(evil, tiny_copy)
        assert named.startswith("..")
        _set_filename(tiny_copy, cam["token"], named)
    elif escape == "absolute":
        named = str(evil)
        _set_filename(tiny_copy, cam["token"], named)
    else:
        named = cam["filename"]
        (tiny_copy / named).unlink()
        (tiny_copy / named).symlink_to(evil)

    catalog = Catalog.load(catalog_for(tmp_path, tiny_copy, stages=True))
    index, _ = ensure_index(catalog)
    (problem,) = index.meta.extra["problems"]
    assert cam["sample_token"] in problem and f"sample_data {cam['token']}" in problem and named in problem
    assert "outside the dataroot" in problem or "climbs out" in problem or "absolute path" in problem
    row = index.tokens.index(cam["sample_token"])
    assert index.record(row)["problem"]

    summary = run_local(catalog, "superpixels")
    assert (summary.computed, len(summary.failed), summary.complete) == (7, 1, False)
    assert cam["sample_token"] in summary.failed[0] and named in summary.failed[0]

    result = _prep_index(catalog.path)
    assert result.exit_code == 2 and named in result.output.replace("\n", "") and "Traceback" not in result.output

    if escape == "symlink":  # a folder the user vouches for (e.g. images on another disk) is followed
        trusted = Catalog.load(catalog_for(tmp_path / "trusted", tiny_copy, params={"index": {"trusted_roots": [str(outside)]}}))
        index, _ = ensure_index(trusted)
        assert not index.meta.extra["problems"] and not any(index.column("problem"))


# --- LiDAR values finite; a file fixed or replaced is recomputed alone ------------------------------


@pytest.mark.parametrize(("column", "value"), [(3, np.nan), (0, np.inf), (2, np.nan)])
def test_non_finite_lidar_fails_its_row_by_name_and_the_fixed_file_is_recomputed_alone(tiny_copy, tmp_path, column, value):
    catalog = Catalog.load(catalog_for(tmp_path, tiny_copy, stages=True))
    index, _ = ensure_index(catalog)
    record = index.record(3)
    good = record["lidar_path"].read_bytes()
    points = np.frombuffer(good, dtype=np.float32).reshape(-1, 5).copy()
    points[[7, 11], column] = value
    record["lidar_path"].write_bytes(points.tobytes())  # same size: the index's size check passes

    summary = run_local(catalog, "correspondences")
    assert (summary.computed, len(summary.failed)) == (7, 1)
    message = summary.failed[0]
    assert record["token"] in message and str(record["lidar_path"]) in message and "non-finite" in message
    assert "2 of" in message and ("x", "y", "z", "intensity")[column] in message

    record["lidar_path"].write_bytes(good)  # fixed: exactly that row is recomputed
    again = run_local(catalog, "correspondences")
    assert (again.computed, again.skipped, again.complete, again.failed) == (1, 7, True, [])


def test_a_replaced_file_makes_exactly_its_rows_stale_and_training_names_them(tiny_copy, tmp_path):
    from pipeline.train.pretrain_data import open_stores

    catalog = Catalog.load(catalog_for(tmp_path, tiny_copy, stages=True))
    for name in ("superpixels", "correspondences", "depth_targets", "teacher_cache"):
        assert run_local(catalog, name).complete
    index, _ = ensure_index(catalog)
    record = index.record(5)
    image = record["cam_paths"][2]
    from PIL import Image

    with Image.open(image) as im:  # another picture in the same file: a new mtime (and size)
        im.transpose(Image.FLIP_LEFT_RIGHT).save(image, quality=80)

    with pytest.raises(StoreError) as err:
        open_stores(catalog)
    text = str(err.value)
    assert "stale" in text and record["token"] in text and "hvd prep" in text

    for name, computed in (("superpixels", 1), ("teacher_cache", 1), ("correspondences", 0), ("depth_targets", 0)):
        summary = run_local(catalog, name)  # only the stages that read images recompute, only that row
        assert (summary.computed, summary.skipped, summary.complete) == (computed, 8 - computed, True), (name, summary)
    open_stores(catalog)  # up to date again


# --- calibration and ego poses -----------------------------------------------------------------------


def _break_calibration(root: Path, case: str) -> tuple[str, str]:
    """Damage the first keyframe's CAM_FRONT calibration (or its ego pose): (token, what the error says)."""
    cam = _keyframe_data(root, "CAM_FRONT")
    table = "ego_pose" if case == "ego zero quaternion" else "calibrated_sensor"
    token = cam["ego_pose_token"] if table == "ego_pose" else cam["calibrated_sensor_token"]
    records = _table(root, table)
    (record,) = [r for r in records if r["token"] == token]
    if case in ("zero quaternion", "ego zero quaternion"):
        record["rotation"], needle = [0.0, 0.0, 0.0, 0.0], "has norm 0"
    elif case == "scaled quaternion":
        record["rotation"], needle = [2 * q for q in record["rotation"]], "has norm 2"
    elif case == "zero intrinsics":
        record["camera_intrinsic"], needle = [[0.0] * 3] * 3, "focal lengths"
    elif case == "fx = 0":
        record["camera_intrinsic"][0][0], needle = 0.0, "fx = 0"
    elif case == "principal point outside":
        record["camera_intrinsic"][0][2], needle = 5000.0, "outside the 320x180 image"
    else:
        raise AssertionError(case)
    _write_table(root, table, records)
    return f"{table} {token}", needle


@pytest.mark.parametrize("case", ["zero quaternion", "scaled quaternion", "zero intrinsics", "fx = 0", "principal point outside", "ego zero quaternion"])
def test_bad_calibration_is_refused_by_name_and_the_other_keyframes_are_computed(tiny_copy, tmp_path, case):
    where, needle = _break_calibration(tiny_copy, case)
    catalog = Catalog.load(catalog_for(tmp_path, tiny_copy, stages=True))
    index, _ = ensure_index(catalog)
    users = [t for t, p in zip(index.tokens, index.column("problem")) if p]
    assert 1 <= len(users) < len(index)  # the keyframes that use the record, not the whole dataset
    problems = index.meta.extra["problems"]
    assert len(problems) == len(users) and all(where in p and needle in p for p in problems), problems
    error = problems_error(index)
    assert isinstance(error, SourceError) and where in str(error)

    summary = run_local(catalog, "correspondences")
    assert summary.computed == len(index) - len(users) and len(summary.failed) == len(users)
    assert all(where in m for m in summary.failed) and {t for t in users if any(t in m for m in summary.failed)} == set(users)

    allowed = Catalog.load(catalog_for(tmp_path / "allowed", tiny_copy, params={"index": {"allow_missing": True}}))
    assert len(ensure_index(allowed)[0]) == len(index) - len(users)


# --- tables: unique tokens, empty scenes, lidarseg ------------------------------------------------------


def test_a_duplicate_sample_data_token_is_refused_naming_table_and_token(tiny_copy, tmp_path):
    records = _table(tiny_copy, "sample_data")
    front = _keyframe_data(tiny_copy, "CAM_FRONT")
    back = _keyframe_data(tiny_copy, "CAM_BACK")
    impostor = dict(back, token=front["token"])  # CAM_BACK's file under CAM_FRONT's token
    _write_table(tiny_copy, "sample_data", records + [impostor])
    result = _prep_index(catalog_for(tmp_path, tiny_copy))
    out = result.output.replace("\n", "")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "sample_data.json" in out and front["token"] in out and "two records" in out and back["filename"] in out


def test_a_scene_without_keyframes_is_reported_and_left_out_of_the_splits(tiny_copy, tmp_path):
    scenes = _table(tiny_copy, "scene")
    empty = dict(scenes[0], token="e" * 32, name="scene-0000", nbr_samples=0, first_sample_token="", last_sample_token="")
    _write_table(tiny_copy, "scene", [empty, *scenes])  # sorts first: it would take the only val slot
    catalog = catalog_for(tmp_path, tiny_copy)
    result = _prep_index(catalog)
    assert result.exit_code == 0, result.output
    assert "scene-0000 has no keyframes" in result.output
    index, _ = ensure_index(Catalog.load(catalog))
    assert index.meta.extra["empty_scenes"] == ["scene-0000"]
    assert "scene-0000" not in set(index.column("scene"))
    assert len(index.rows("val")) > 0 and len(index.rows("train")) > 0 and len(index) == 8


def test_a_missing_lidarseg_file_is_named_and_allow_missing_leaves_its_keyframe_out(tiny_copy, tmp_path):
    lidar = _keyframe_data(tiny_copy, "LIDAR_TOP")
    (label,) = [r for r in _table(tiny_copy, "lidarseg") if r["sample_data_token"] == lidar["token"]]
    (tiny_copy / label["filename"]).unlink()

    result = _prep_index(catalog_for(tmp_path, tiny_copy))
    out = result.output.replace("\n", "")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert label["filename"].split("/")[-1] in out and lidar["sample_token"] in out and "lidarseg labels missing" in out

    allowed = Catalog.load(catalog_for(tmp_path / "allowed", tiny_copy, params={"index": {"allow_missing": True}}))
    index, _ = ensure_index(allowed)
    assert len(index) == 7 and lidar["sample_token"] not in index.tokens
