"""The synthetic world in SemanticKITTI's format, read back with plain numpy the way the public
SemanticKITTI tools read it (scans reshaped to (-1, 4), labels ``& 0xFFFF`` and ``>> 16``), checked
against the synthetic world's ground truth; SemanticKITTI's learning map, class by class."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data import semantickitti as kitti

# The synthetic classes and the SemanticKITTI raw ids each may be written as (still, moving).
ALLOWED = {
    "flat.driveable_surface": {40, 44},  # road, parking
    "flat.sidewalk": {48},
    "flat.terrain": {72},
    "static.manmade": {50, 80},  # building, pole
    "static.vegetation": {70, 71},  # vegetation, trunk
    "vehicle.car": {10, 252},
    "vehicle.truck": {18, 258},
    "vehicle.bus.rigid": {13, 257},
    "human.pedestrian.adult": {30, 254},
    "movable_object.barrier": {51},  # fence
    "movable_object.trafficcone": {99},  # other-object
}
MOVING_ID = {10: 252, 18: 258, 13: 257, 30: 254}
# |lateral offset from the road centreline| in metres where each ground class may lie
GROUND_BANDS = {40: (0.0, 7.0), 44: (7.0, 9.5), 48: (9.5, 13.0), 72: (13.0, np.inf)}
TOLERANCE_M = 0.02  # float32 coordinates and 7-digit poses


def _read(root, sequence, frame):
    folder = root / "sequences" / sequence
    scan = np.fromfile(folder / "velodyne" / f"{frame:06d}.bin", dtype=np.float32).reshape(-1, 4)
    label = np.fromfile(folder / "labels" / f"{frame:06d}.label", dtype=np.uint32)
    return scan, label & 0xFFFF, label >> 16


def test_layout_counts_and_text_files(kitti_tiny_root):
    sequences = sorted(p.name for p in (kitti_tiny_root / "sequences").iterdir())
    assert sequences == ["00", "08"]  # the first scene trains, the second validates
    for sequence in sequences:
        folder = kitti_tiny_root / "sequences" / sequence
        scans = sorted(p.name for p in (folder / "velodyne").iterdir())
        labels = sorted(p.name for p in (folder / "labels").iterdir())
        assert scans == [f"{i:06d}.bin" for i in range(16)] and labels == [f"{i:06d}.label" for i in range(16)]
        for i in range(16):
            scan, semantic, instance = _read(kitti_tiny_root, sequence, i)
            assert (folder / "labels" / f"{i:06d}.label").stat().st_size == 4 * len(scan)
            assert len(scan) > 5_000 and set(semantic.tolist()) <= set(kitti.RAW_LABELS)
            assert 0 <= scan[:, 3].min() and scan[:, 3].max() <= 1  # remission
        times = np.loadtxt(folder / "times.txt")
        np.testing.assert_allclose(times, 0.1 * np.arange(16), atol=1e-9)
        poses = np.loadtxt(folder / "poses.txt")
        assert poses.shape == (16, 12)
        np.testing.assert_allclose(poses[0], np.eye(4)[:3].ravel(), atol=1e-6)
        steps = np.diff(poses[:, [3, 7, 11]], axis=0)  # camera 0: x right, y down, z forward
        assert (steps[:, 2] > 0.4).all() and (steps[:, 2] < 1.01).all() and np.abs(steps[:, 1]).max() < 1e-6  # 5-10 m/s at 10 Hz, level
        calib = {}
        for line in (folder / "calib.txt").read_text().splitlines():
            name, values = line.split(":")
            calib[name] = np.array(values.split(), dtype=float).reshape(3, 4)
        assert list(calib) == ["P0", "P1", "P2", "P3", "Tr"]
        rot = calib["Tr"][:, :3]
        np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-6)
        np.testing.assert_allclose(rot @ [1, 0, 0], [0, 0, 1], atol=1e-6)  # velodyne forward = camera z
        np.testing.assert_allclose(rot @ [0, 0, 1], [0, -1, 0], atol=1e-6)  # velodyne up = camera -y
        assert np.abs(calib["Tr"][:, 3]).max() < 0.5  # the cameras sit next to the Velodyne


@pytest.mark.parametrize("sequence, scene, frame", [("00", 0, 0), ("08", 1, 11)])
def test_points_and_labels_match_the_world(kitti_tiny_root, sequence, scene, frame):
    """Every point and its label against the world: the same rays hit the same surfaces, each label
    is one the synthetic class allows, moving objects carry moving ids, instance ids are one per
    object, and -- through poses.txt and calib.txt -- ground classes lie on the ground in their band
    of the street, buildings behind the sidewalk, poles on their line, trunks below the crowns."""
    from pipeline.data.classes import LIDARSEG_CLASSES
    from pipeline.data.geometry import invert, rigid
    from pipeline.synth import PRESETS, layout
    from pipeline.synth.generate import _world
    from pipeline.synth.render import ego_to_global, render_lidar
    from pipeline.synth.semantickitti import ELEVATIONS_DEG, instance_ids

    world = _world(PRESETS["tiny"], 0)
    s = world.scenes[scene]
    mount = rigid(np.eye(3), [0.0, 0.0, 1.73])  # KITTI's Velodyne height
    assert len(ELEVATIONS_DEG) == 64 and ELEVATIONS_DEG.max() == 2.0 and -24.9 < ELEVATIONS_DEG.min() < -24
    truth = render_lidar(world, s, s.start_time_us + frame * 100_000, mount, azimuth_steps=256, elevations_deg=ELEVATIONS_DEG)
    scan, semantic, instance = _read(kitti_tiny_root, sequence, frame)

    assert len(scan) == len(truth.points)
    np.testing.assert_array_equal(scan[:, :3], truth.points[:, :3])
    np.testing.assert_allclose(scan[:, 3], truth.points[:, 3] / 255, atol=1e-6)
    for k, name in enumerate(LIDARSEG_CLASSES):
        ids = set(semantic[truth.label == k].tolist())
        assert ids <= ALLOWED.get(name, set()), (name, ids)
    uids = truth.instance
    assert ((instance > 0) == (uids > 0)).all()
    decode = {v: uid for uid, v in instance_ids(world, s).items()}
    for inst in np.unique(instance[instance > 0]):
        at = instance == inst
        assert (uids[at] == decode[int(inst)]).all()  # one object per instance id
        obj = world.object(decode[int(inst)])
        ids = set(semantic[at].tolist())
        assert len(ids) == 1, (obj.category, ids)
        moving = obj.attribute in ("vehicle.moving", "pedestrian.moving")
        assert ids <= (ALLOWED[obj.category] & (set(MOVING_ID.values()) if moving else set(MOVING_ID))) or obj.category.startswith("movable_object")

    folder = kitti_tiny_root / "sequences" / sequence
    tr = np.eye(4)
    tr[:3] = kitti.read_matrices(folder / "calib.txt")["Tr"]
    pose = kitti.read_poses(folder / "poses.txt")[frame]
    first = ego_to_global(s, s.start_time_us) @ mount
    to_world = first @ invert(tr) @ pose @ tr
    xyz = scan[:, :3].astype(np.float64) @ to_world[:3, :3].T + to_world[:3, 3]
    lateral = np.abs(layout.lateral(xyz[:, 0], xyz[:, 1]))
    for raw, (lo, hi) in GROUND_BANDS.items():
        at = semantic == raw
        assert at.sum() > 10, raw
        assert np.abs(xyz[at, 2]).max() < TOLERANCE_M, raw
        assert lo - TOLERANCE_M <= lateral[at].min() and lateral[at].max() <= hi + TOLERANCE_M, raw
    assert lateral[semantic == 50].min() >= 17.5 - TOLERANCE_M  # buildings stand behind the sidewalk
    poles = semantic == 80
    if poles.any():
        assert np.abs(lateral[poles] - 9.9).max() <= 0.12 + TOLERANCE_M
    trunks = semantic == 71
    if trunks.any():
        assert xyz[trunks, 2].max() <= 3.5 + TOLERANCE_M and lateral[trunks].min() >= 14.4 - 0.25 - TOLERANCE_M


# semantic-kitti.yaml's learning map, written out: raw id, raw name, evaluation class.
LEARNING_MAP_TABLE = [
    (0, "unlabeled", "unlabeled"),
    (1, "outlier", "unlabeled"),
    (10, "car", "car"),
    (11, "bicycle", "bicycle"),
    (13, "bus", "other-vehicle"),
    (15, "motorcycle", "motorcycle"),
    (16, "on-rails", "other-vehicle"),
    (18, "truck", "truck"),
    (20, "other-vehicle", "other-vehicle"),
    (30, "person", "person"),
    (31, "bicyclist", "bicyclist"),
    (32, "motorcyclist", "motorcyclist"),
    (40, "road", "road"),
    (44, "parking", "parking"),
    (48, "sidewalk", "sidewalk"),
    (49, "other-ground", "other-ground"),
    (50, "building", "building"),
    (51, "fence", "fence"),
    (52, "other-structure", "unlabeled"),
    (60, "lane-marking", "road"),
    (70, "vegetation", "vegetation"),
    (71, "trunk", "trunk"),
    (72, "terrain", "terrain"),
    (80, "pole", "pole"),
    (81, "traffic-sign", "traffic-sign"),
    (99, "other-object", "unlabeled"),
    (252, "moving-car", "car"),
    (253, "moving-bicyclist", "bicyclist"),
    (254, "moving-person", "person"),
    (255, "moving-motorcyclist", "motorcyclist"),
    (256, "moving-on-rails", "other-vehicle"),
    (257, "moving-bus", "other-vehicle"),
    (258, "moving-truck", "truck"),
    (259, "moving-other-vehicle", "other-vehicle"),
]
EVAL_CLASSES = ["unlabeled", "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist", "road",
                "parking", "sidewalk", "other-ground", "building", "fence", "vegetation", "trunk", "terrain", "pole", "traffic-sign"]  # fmt: skip


def test_learning_map_class_by_class(tmp_path):
    assert list(kitti.EVAL_CLASSES) == EVAL_CLASSES and len(EVAL_CLASSES) - 1 == 19
    assert sorted(kitti.RAW_LABELS) == [raw for raw, _, _ in LEARNING_MAP_TABLE] == sorted(kitti.LEARNING_MAP)
    for raw, name, target in LEARNING_MAP_TABLE:
        assert kitti.RAW_LABELS[raw] == name, raw
        assert kitti.EVAL_CLASSES[kitti.LEARNING_MAP[raw]] == target, (raw, name)
    lut = kitti.learning_lut()
    assert lut[2] == lut[100] == lut[260] == -1  # ids SemanticKITTI does not define

    # a label file with instance ids in the upper bits maps through the lower 16 only
    raws = np.array([raw for raw, _, _ in LEARNING_MAP_TABLE], dtype=np.uint32)
    (raws | (np.arange(len(raws), dtype=np.uint32) << 16)).tofile(tmp_path / "a.label")
    got = kitti.eval_labels(tmp_path / "a.label", len(raws))
    assert [EVAL_CLASSES[k] for k in got] == [target for _, _, target in LEARNING_MAP_TABLE]
    np.array([40, 3], dtype=np.uint32).tofile(tmp_path / "b.label")
    with pytest.raises(Exception, match=r"b.label: raw label ids \[3\]"):
        kitti.eval_labels(tmp_path / "b.label", 2)
    with pytest.raises(Exception, match="b.label: 2 labels for 3 points"):
        kitti.eval_labels(tmp_path / "b.label", 3)


def test_standard_split_and_label_fraction(kitti_tiny_root):
    train, val = kitti.frames(kitti_tiny_root, "train"), kitti.frames(kitti_tiny_root, "val")
    assert [f.token for f in train] == [f"00/{i:06d}" for i in range(16)]
    assert [f.token for f in val] == [f"08/{i:06d}" for i in range(16)]
    assert [f.token for f in kitti.label_fraction_frames(train, 0.25)] == ["00/000000", "00/000004", "00/000008", "00/000012"]
    # 1 %: every 100th of the training frames sorted by (sequence, frame), from the first
    many = [kitti.Frame(seq, f"{i:06d}", None, None) for seq, n in (("00", 120), ("01", 130), ("09", 60)) for i in range(n)]
    kept = [f.token for f in kitti.label_fraction_frames(many, 0.01)]
    assert kept == ["00/000000", "00/000100", "01/000080", "09/000050"]
    assert [kitti.sequence_split(s) for s in ("00", "07", "08", "09", "10", "11")] == ["train", "train", "val", "train", "train", ""]
