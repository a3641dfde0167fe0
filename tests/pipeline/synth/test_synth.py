"""The synthetic world: loadable by nuscenes-devkit, timed like nuScenes, geometrically consistent
between LiDAR and cameras, deterministic, and resumable."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pyquaternion import Quaternion

from pipeline.data.classes import LIDARSEG_INDEX
from pipeline.data.source import CAMERAS
from pipeline.errors import HvdError
from pipeline.synth import PRESETS
from pipeline.synth.generate import MANIFEST, MARKERS, generate
from tests.conftest import descendants, kill_all, kill_leaves_nothing, tree_digest


@pytest.fixture(scope="module")
def nusc(tiny_root):
    from nuscenes.nuscenes import NuScenes

    with contextlib.redirect_stdout(io.StringIO()):
        return NuScenes(version="v1.0-mini", dataroot=str(tiny_root), verbose=False)


def test_layout_has_every_nuscenes_table_and_folder(tiny_root):
    tables = {p.stem for p in (tiny_root / "v1.0-mini").glob("*.json")}
    assert tables == {
        "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose",
        "log", "scene", "sample", "sample_data", "sample_annotation", "map", "lidarseg",
    }
    for folder in ("samples", "sweeps", "maps", "lidarseg/v1.0-mini"):
        assert any((tiny_root / folder).iterdir()), folder
    manifest = json.loads((tiny_root / MANIFEST).read_text())
    assert manifest["complete"] and manifest["scenes"] == PRESETS["tiny"].n_scenes
    assert manifest["identity"]["image_size"] == [PRESETS["tiny"].image_height, PRESETS["tiny"].image_width]
    assert len(list((tiny_root / MARKERS).glob("*.json"))) == PRESETS["tiny"].n_scenes * PRESETS["tiny"].keyframes_per_scene


def test_devkit_loads_with_lidarseg(nusc):
    preset = PRESETS["tiny"]
    assert len(nusc.scene) == preset.n_scenes
    assert len(nusc.sample) == preset.n_scenes * preset.keyframes_per_scene
    assert len(nusc.lidarseg) == len(nusc.sample)
    assert nusc.lidarseg_idx2name_mapping[LIDARSEG_INDEX["vehicle.car"]] == "vehicle.car"
    for sample in nusc.sample:
        assert set(sample["data"]) == {"LIDAR_TOP", *CAMERAS}
        labels = np.fromfile(Path(nusc.dataroot) / nusc.get("lidarseg", sample["data"]["LIDAR_TOP"])["filename"], dtype=np.uint8)
        points = np.fromfile(Path(nusc.dataroot) / nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["filename"], dtype=np.float32)
        assert points.size == 5 * labels.size


def test_devkit_renderers_run(nusc, tmp_path):
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    sample = nusc.sample[2]
    # The devkit's map underlay (render_ego_centric_map) calls int() on a one-element array, which
    # numpy 1.25 deprecated and numpy 2.5 refuses (TypeError): draw it where numpy still allows it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            underlay_map = int(np.array([1])) == 1
        except TypeError:
            underlay_map = False
    outputs = {
        "pc_in_image": lambda p: nusc.render_pointcloud_in_image(sample["token"], camera_channel="CAM_FRONT_LEFT", show_lidarseg=True, out_path=p, verbose=False),
        "camera": lambda p: nusc.render_sample_data(sample["data"]["CAM_BACK"], out_path=p, verbose=False),
        "lidar": lambda p: nusc.render_sample_data(sample["data"]["LIDAR_TOP"], nsweeps=3, underlay_map=underlay_map, out_path=p, verbose=False),
    }
    for name, render in outputs.items():
        path = tmp_path / f"{name}.png"
        render(str(path))
        assert path.stat().st_size > 10_000, name
    matplotlib.pyplot.close("all")


def _chains(nusc):
    starts = [sd for sd in nusc.sample_data if not sd["prev"]]
    for first in starts:
        chain = [first]
        while chain[-1]["next"]:
            nxt = nusc.get("sample_data", chain[-1]["next"])
            assert nxt["prev"] == chain[-1]["token"]
            chain.append(nxt)
        yield chain


def test_sample_data_chains_have_nuscenes_timing(nusc):
    preset = PRESETS["tiny"]
    chains = list(_chains(nusc))
    assert len(chains) == preset.n_scenes * 7
    assert sum(len(c) for c in chains) == len(nusc.sample_data)  # every record is on one chain
    for chain in chains:
        channel = chain[0]["channel"]
        times = np.array([sd["timestamp"] for sd in chain])
        assert (np.diff(times) > 0).all()
        assert len({nusc.get("sample", sd["sample_token"])["scene_token"] for sd in chain}) == 1
        for sd in chain:
            pose = nusc.get("ego_pose", sd["ego_pose_token"])
            assert pose["timestamp"] == sd["timestamp"]  # each sensor has its own ego pose
            folder = "samples" if sd["is_key_frame"] else "sweeps"
            assert sd["filename"].startswith(f"{folder}/{channel}/")
        keys = times[[sd["is_key_frame"] for sd in chain]]
        assert len(keys) == preset.keyframes_per_scene
        assert np.all(np.abs(np.diff(keys) - 500_000) < 2_000)  # keyframes at 2 Hz
        if channel == "LIDAR_TOP":
            assert np.all(np.abs(np.diff(times) - 50_000) < 1_000)  # sweeps at 20 Hz
            assert [i for i, sd in enumerate(chain) if sd["is_key_frame"]] == list(range(0, len(chain), 10))
            assert all(nusc.get("sample", sd["sample_token"])["timestamp"] >= sd["timestamp"] for sd in chain)
    for sample in nusc.sample:
        lidar_t = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["timestamp"]
        assert lidar_t == sample["timestamp"]
        offsets = [nusc.get("sample_data", sample["data"][c])["timestamp"] - lidar_t for c in CAMERAS]
        assert len(set(offsets)) == 6 and max(map(abs, offsets)) < 30_000  # own times, near the sweep


def test_lidar_files_are_32_beam_pcd_bin_with_many_classes(nusc):
    classes = set()
    for sample in nusc.sample:
        sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        points = np.fromfile(Path(nusc.dataroot) / sd["filename"], dtype=np.float32).reshape(-1, 5)
        ring = points[:, 4]
        assert set(np.unique(ring)) == set(range(32))
        assert 0 <= points[:, 3].min() and points[:, 3].max() <= 255
        assert np.all(points[:, 3] == np.round(points[:, 3]))
        ranges = np.linalg.norm(points[:, :3], axis=1)
        assert ranges.min() >= 1.0 and ranges.max() <= 70.0 + 1e-3
        labels = np.fromfile(Path(nusc.dataroot) / nusc.get("lidarseg", sd["token"])["filename"], dtype=np.uint8)
        classes |= set(np.unique(labels).tolist())
    names = {nusc.lidarseg_idx2name_mapping[c] for c in classes}
    required = {"flat.driveable_surface", "flat.sidewalk", "flat.terrain", "static.manmade", "static.vegetation", "vehicle.car", "human.pedestrian.adult"}
    assert required <= names
    assert len(names) >= 8
    assert names & {"vehicle.truck", "vehicle.bus.rigid"} and names & {"movable_object.barrier", "movable_object.trafficcone"}


def test_camera_intrinsics_match_image_size(nusc):
    for sample in nusc.sample:
        for channel in CAMERAS:
            sd = nusc.get("sample_data", sample["data"][channel])
            K = np.array(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])["camera_intrinsic"])
            with Image.open(Path(nusc.dataroot) / sd["filename"]) as im:
                assert im.size == (sd["width"], sd["height"]) == (PRESETS["tiny"].image_width, PRESETS["tiny"].image_height)
            assert abs(K[0, 2] - sd["width"] / 2) < 0.02 * sd["width"] and abs(K[1, 2] - sd["height"] / 2) < 0.02 * sd["height"]


def _edge_mask(label: np.ndarray, instance: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` px of a change of class or instance."""
    key = label.astype(np.int64) * 1_000_000 + instance
    edge = np.zeros(key.shape, dtype=bool)
    h, w = key.shape
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            shifted = np.full(key.shape, -1)
            shifted[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = key[max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
            edge |= (shifted != key) & (shifted != -1)
    return edge


def test_cameras_see_the_lidar_classes_where_the_lidar_says(nusc):
    """Project each keyframe point into each camera through the devkit's own chain (ego pose at
    the LiDAR time, then at the camera time); the rendered class there is the point's label."""
    from nuscenes.utils.data_classes import LidarPointCloud
    from nuscenes.utils.geometry_utils import view_points

    root = Path(nusc.dataroot)
    agree = total = 0
    for sample in nusc.sample:
        lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        labels = np.fromfile(root / nusc.get("lidarseg", lidar["token"])["filename"], dtype=np.uint8)
        for channel in CAMERAS:
            cam = nusc.get("sample_data", sample["data"][channel])
            pc = LidarPointCloud.from_file(str(root / lidar["filename"]))
            cs = nusc.get("calibrated_sensor", lidar["calibrated_sensor_token"])
            pc.rotate(Quaternion(cs["rotation"]).rotation_matrix)
            pc.translate(np.array(cs["translation"]))
            pose = nusc.get("ego_pose", lidar["ego_pose_token"])
            pc.rotate(Quaternion(pose["rotation"]).rotation_matrix)
            pc.translate(np.array(pose["translation"]))
            pose = nusc.get("ego_pose", cam["ego_pose_token"])
            pc.translate(-np.array(pose["translation"]))
            pc.rotate(Quaternion(pose["rotation"]).rotation_matrix.T)
            cs = nusc.get("calibrated_sensor", cam["calibrated_sensor_token"])
            pc.translate(-np.array(cs["translation"]))
            pc.rotate(Quaternion(cs["rotation"]).rotation_matrix.T)
            depth = pc.points[2]
            uv = view_points(pc.points[:3], np.array(cs["camera_intrinsic"]), normalize=True)
            col, row = np.round(uv[0]).astype(int), np.round(uv[1]).astype(int)
            inside = (depth > 1.0) & (col >= 0) & (col < cam["width"]) & (row >= 0) & (row < cam["height"])
            label_map = np.array(Image.open(root / "synth" / "labels" / f"{cam['token']}.png"))
            instance_map = np.array(Image.open(root / "synth" / "instances" / f"{cam['token']}.png"))
            away = ~_edge_mask(label_map, instance_map, 2)
            keep = np.flatnonzero(inside)
            keep = keep[away[row[keep], col[keep]]]
            agree += int((label_map[row[keep], col[keep]] == labels[keep]).sum())
            total += len(keep)
    assert total > 5_000
    assert agree / total >= 0.95, f"only {agree / total:.3f} of {total} points agree"


def test_image_colours_carry_the_classes(nusc):
    """A nearest-mean-colour classifier fit on half the keyframes labels the other half's pixels
    far above chance: the images, not just the label maps, tell the classes apart."""
    root = Path(nusc.dataroot)
    pixels, classes = [], []
    for sample in nusc.sample:
        for channel in CAMERAS:
            token = sample["data"][channel]
            rgb = np.asarray(Image.open(root / nusc.get("sample_data", token)["filename"]), dtype=np.float64)
            label = np.array(Image.open(root / "synth" / "labels" / f"{token}.png"))
            pixels.append(rgb[::4, ::4].reshape(-1, 3))
            classes.append(label[::4, ::4].ravel())
    half = len(pixels) // 2
    fit_x, fit_y = np.concatenate(pixels[:half]), np.concatenate(classes[:half])
    test_x, test_y = np.concatenate(pixels[half:]), np.concatenate(classes[half:])
    present = [c for c in np.unique(fit_y) if (fit_y == c).sum() > 200 and c != 255]
    means = np.stack([fit_x[fit_y == c].mean(axis=0) for c in present])
    mask = np.isin(test_y, present)
    guess = np.asarray(present)[np.argmin(((test_x[mask, None] - means[None]) ** 2).sum(-1), axis=1)]
    accuracy = (guess == test_y[mask]).mean()
    assert len(present) >= 6
    assert accuracy > 3.0 / len(present), accuracy


def test_annotation_boxes_hold_their_points(nusc):
    from nuscenes.utils.data_classes import LidarPointCloud
    from nuscenes.utils.geometry_utils import points_in_box

    root = Path(nusc.dataroot)
    checked = 0
    for sample in nusc.sample:
        lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        pc = LidarPointCloud.from_file(str(root / lidar["filename"]))
        _, boxes, _ = nusc.get_sample_data(lidar["token"])  # boxes in the LiDAR frame
        anns = {nusc.get("sample_annotation", t)["token"]: nusc.get("sample_annotation", t) for t in sample["anns"]}
        for box in boxes:
            ann = anns[box.token]
            assert ann["num_lidar_pts"] > 0
            inside = points_in_box(box, pc.points[:3], wlh_factor=1.02).sum()
            assert inside >= 0.95 * ann["num_lidar_pts"], (ann["num_lidar_pts"], inside)
            assert nusc.get("visibility", ann["visibility_token"])["level"].startswith("v")
            checked += 1
    categories = {nusc.get("category", i["category_token"])["name"] for i in nusc.instance}
    assert {"vehicle.car", "human.pedestrian.adult"} <= categories
    assert checked > 20
    for inst in nusc.instance:  # instance chains are consistent
        chain, token = [], inst["first_annotation_token"]
        while token:
            chain.append(token)
            token = nusc.get("sample_annotation", token)["next"]
        assert len(chain) == inst["nbr_annotations"] and chain[-1] == inst["last_annotation_token"]


def test_same_seed_gives_identical_bytes(tiny_root, tmp_path):
    """A second generation, with one process instead of two, writes byte-identical files."""
    again = tmp_path / "again"
    generate(again, PRESETS["tiny"], seed=0, workers=1)
    assert tree_digest(again) == tree_digest(tiny_root)


def test_killed_run_resumes_to_identical_bytes(tiny_root, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "cli.main", "data", "synth", "--out", str(out), "--preset", "tiny", "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[3])
    deadline = time.monotonic() + 120
    while not (out / MARKERS).exists() or len(list((out / MARKERS).glob("*.json"))) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "generation ended before it could be killed"
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert not json.loads((out / MANIFEST).read_text())["complete"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, done.stderr
    assert tree_digest(out) == tree_digest(tiny_root)


def test_killed_parallel_run_leaves_no_process_and_resumes_to_identical_bytes(tiny_root, tmp_path):
    """SIGKILL of the command mid-run: its pool workers and the resource tracker end within 5 s,
    whatever they were writing; a re-run finishes the dataset byte for byte."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "cli.main", "data", "synth", "--out", str(out), "--preset", "tiny", "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[3])
    procs = []
    try:
        deadline = time.monotonic() + 120
        while len([p for p in descendants(proc.pid) if "spawn_main" in " ".join(p.cmdline())]) < 2 or not list((out / MARKERS).glob("*.json")):
            assert proc.poll() is None and time.monotonic() < deadline, "generation ended before it could be killed"
            time.sleep(0.05)
        procs = descendants(proc.pid)
        kill_leaves_nothing(proc, procs, "`hvd data synth`")
    finally:
        proc.kill()
        kill_all(procs)
    assert not json.loads((out / MANIFEST).read_text())["complete"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, done.stderr
    assert tree_digest(out) == tree_digest(tiny_root)


def test_a_resumed_run_removes_partial_writes(tiny_root, tmp_path):
    """The temporary files of writes cut short by a kill are gone once the dataset is finished."""
    out = tmp_path / "partial"
    shutil.copytree(tiny_root, out)
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**manifest, "complete": False}))
    marker = sorted((out / MARKERS).glob("*.json"))[-1]
    marker.unlink()  # that keyframe is rendered again
    image = next((out / "samples" / "CAM_FRONT").iterdir())
    stale = [image.with_name(f".{image.name}.4242.tmp"), marker.with_name(f".{marker.name}.77.tmp"), out / "v1.0-mini" / ".scene.json.9.tmp"]
    for path in stale:
        path.write_bytes(b"cut short")
    generate(out, PRESETS["tiny"], seed=0, workers=1)
    assert not any(path.exists() for path in stale)
    assert tree_digest(out) == tree_digest(tiny_root)


def test_growing_by_a_scene_renders_only_it_and_equals_a_direct_run(tiny_root, tmp_path):
    from dataclasses import replace

    three = replace(PRESETS["tiny"], n_scenes=3)
    grown = tmp_path / "grown"
    shutil.copytree(tiny_root, grown)
    before = {p: p.stat().st_mtime_ns for p in (grown / "samples").rglob("*") if p.is_file()}
    seen = []
    generate(grown, three, seed=0, workers=1, on_progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (8, 12)  # the two existing scenes' keyframes were not rendered again
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    direct = tmp_path / "direct"
    generate(direct, three, seed=0, workers=2)
    assert tree_digest(grown) == tree_digest(direct)
    with pytest.raises(HvdError, match="holds 3 scenes"):
        generate(grown, PRESETS["tiny"], seed=0)


def test_refuses_to_overwrite_other_data(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(HvdError, match="not an hvd synthetic dataset"):
        generate(foreign, PRESETS["tiny"], seed=0)
    assert (foreign / "notes.txt").read_text() == "mine"


def _project_with_devkit_chain(nusc, lidar: dict, cam: dict, points: np.ndarray, camera_pose_token: str) -> tuple[np.ndarray, np.ndarray]:
    """(uv (N, 2), depth (N,)) of LiDAR-frame points in a camera, as the devkit maps them."""
    from nuscenes.utils.geometry_utils import view_points

    pts = points.T.copy()
    cs = nusc.get("calibrated_sensor", lidar["calibrated_sensor_token"])
    pts = Quaternion(cs["rotation"]).rotation_matrix @ pts + np.array(cs["translation"])[:, None]
    pose = nusc.get("ego_pose", lidar["ego_pose_token"])
    pts = Quaternion(pose["rotation"]).rotation_matrix @ pts + np.array(pose["translation"])[:, None]
    pose = nusc.get("ego_pose", camera_pose_token)
    pts = Quaternion(pose["rotation"]).rotation_matrix.T @ (pts - np.array(pose["translation"])[:, None])
    cs = nusc.get("calibrated_sensor", cam["calibrated_sensor_token"])
    pts = Quaternion(cs["rotation"]).rotation_matrix.T @ (pts - np.array(cs["translation"])[:, None])
    return view_points(pts, np.array(cs["camera_intrinsic"]), normalize=True)[:2].T, pts[2]


@pytest.mark.parametrize("camera_time_pose", [True, False])
def test_camera_rays_hit_the_lidar_points_exactly(nusc, camera_time_pose):
    """The ray of each camera through a static LiDAR point's projected pixel position hits that
    very point (within 1 cm): poses, calibrations and timestamps on disk are exactly those the
    images were rendered with. Ignoring the ego motion between the LiDAR and camera timestamps
    breaks this for the side and rear cameras, which fire up to 25 ms away from the sweep."""
    from pipeline.data.geometry import rigid
    from pipeline.synth.raycast import cast, materialize
    from pipeline.synth.world import build_world

    world = build_world(PRESETS["tiny"], 0)
    root = Path(nusc.dataroot)
    rng = np.random.default_rng(0)
    errors = []
    for sample in nusc.sample[:4]:
        lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        labels = np.fromfile(root / nusc.get("lidarseg", lidar["token"])["filename"], dtype=np.uint8)
        points = np.fromfile(root / lidar["filename"], dtype=np.float32).reshape(-1, 5)[:, :3].astype(np.float64)
        static = np.isin(labels, [LIDARSEG_INDEX[c] for c in ("flat.driveable_surface", "flat.sidewalk", "flat.terrain", "static.manmade", "static.vegetation")])
        scene = next(s for s in world.scenes if s.name == nusc.get("scene", sample["scene_token"])["name"])
        cs = nusc.get("calibrated_sensor", lidar["calibrated_sensor_token"])
        pose = nusc.get("ego_pose", lidar["ego_pose_token"])
        to_world = rigid(np.array(pose["rotation"]), pose["translation"]) @ rigid(np.array(cs["rotation"]), cs["translation"])
        for channel in ("CAM_FRONT_RIGHT", "CAM_BACK", "CAM_BACK_LEFT"):
            cam = nusc.get("sample_data", sample["data"][channel])
            pose_token = cam["ego_pose_token"] if camera_time_pose else lidar["ego_pose_token"]
            uv, depth = _project_with_devkit_chain(nusc, lidar, cam, points, pose_token)
            ok = static & (depth > 1.0) & (uv[:, 0] > 0) & (uv[:, 0] < cam["width"] - 1) & (uv[:, 1] > 0) & (uv[:, 1] < cam["height"] - 1)
            pick = rng.choice(np.flatnonzero(ok), size=min(300, ok.sum()), replace=False)
            ccs = nusc.get("calibrated_sensor", cam["calibrated_sensor_token"])
            cpose = nusc.get("ego_pose", cam["ego_pose_token"])
            cam_to_world = rigid(np.array(cpose["rotation"]), cpose["translation"]) @ rigid(np.array(ccs["rotation"]), ccs["translation"])
            K = np.array(ccs["camera_intrinsic"])
            rays_cam = np.stack([(uv[pick, 0] - K[0, 2]) / K[0, 0], (uv[pick, 1] - K[1, 2]) / K[1, 1], np.ones(len(pick))], axis=1)
            dirs = (rays_cam @ cam_to_world[:3, :3].T)[None]  # (1, N, 3)
            t_s = (cam["timestamp"] - scene.start_time_us) * 1e-6
            prims = materialize(world.objects_near(scene, t_s, cam_to_world[:2, 3], 160.0))
            regions = [(i, slice(None), slice(None)) for i in range(len(prims))]
            hits = cast(cam_to_world[:3, 3], dirs, prims, regions)
            hit_world = cam_to_world[:3, 3] + hits.t[0, :, None] * dirs[0]
            lidar_world = points[pick] @ to_world[:3, :3].T + to_world[:3, 3]
            errors.append(np.linalg.norm(hit_world - lidar_world, axis=1))
    errors = np.concatenate(errors)
    exact = (errors < 0.01).mean()  # the rest: LiDAR points the camera sees occluded
    if camera_time_pose:
        assert exact > 0.9, exact
    else:
        assert exact < 0.5, exact
