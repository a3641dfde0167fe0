"""The nuScenes tables of a synthetic dataset: the 13 JSON tables of a version folder plus
``lidarseg.json``, built from the generation plan and the per-keyframe statistics the renderers
return. Field names, types and conventions follow the nuScenes schema exactly."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from pipeline.data.classes import LIDARSEG_CLASSES
from pipeline.data.geometry import matrix_to_quaternion, yaw_quaternion

ATTRIBUTES = (
    ("vehicle.moving", "Vehicle is moving."),
    ("vehicle.stopped", "Vehicle, with a driver/rider in/on it, is currently stationary but has an intent to move."),
    ("vehicle.parked", "Vehicle is stationary (usually for longer duration) with no immediate intent to move."),
    ("cycle.with_rider", "There is a rider on the bicycle or motorcycle."),
    ("cycle.without_rider", "There is NO rider on the bicycle or motorcycle."),
    ("pedestrian.sitting_lying_down", "The human is sitting or lying down."),
    ("pedestrian.standing", "The human is standing."),
    ("pedestrian.moving", "The human is moving."),
)
VISIBILITY_LEVELS = (("1", "v0-40", 0.4), ("2", "v40-60", 0.6), ("3", "v60-80", 0.8), ("4", "v80-100", 1.01))
SENSOR_MODALITY = {"LIDAR_TOP": "lidar"}


@dataclass(frozen=True)
class Tokens:
    """Deterministic 32-hex tokens, unique per (dataset identity, what they name)."""

    namespace: str

    def __call__(self, *parts) -> str:
        text = "/".join([self.namespace, *map(str, parts)])
        return hashlib.md5(text.encode()).hexdigest()


@dataclass(frozen=True)
class Frame:
    """One sample_data record to render: a LiDAR sweep or a camera image."""

    scene: int
    channel: str
    t_us: int
    key: bool
    sample: int  # keyframe index within the scene this sample_data belongs to
    token: str
    filename: str


def category_table(tok: Tokens) -> list[dict]:
    return [
        {"token": tok("category", name), "name": name, "description": f"nuScenes-lidarseg class {i}: {name}", "index": i}
        for i, name in enumerate(LIDARSEG_CLASSES)
    ]


def attribute_table(tok: Tokens) -> list[dict]:
    return [{"token": tok("attribute", name), "name": name, "description": desc} for name, desc in ATTRIBUTES]


def visibility_table() -> list[dict]:
    lows = {"1": 0, "2": 40, "3": 60, "4": 80}
    highs = {"1": 40, "2": 60, "3": 80, "4": 100}
    return [
        {"description": f"visibility of whole object is between {lows[t]} and {highs[t]}%", "token": t, "level": level}
        for t, level, _ in VISIBILITY_LEVELS
    ]


def visibility_token(fraction: float) -> str:
    return next(t for t, _, upper in VISIBILITY_LEVELS if fraction < upper)


def sensor_table(tok: Tokens, channels) -> list[dict]:
    return [{"token": tok("sensor", ch), "channel": ch, "modality": SENSOR_MODALITY.get(ch, "camera")} for ch in channels]


def calibrated_sensor_records(tok: Tokens, scene: int, calib: dict) -> list[dict]:
    out = []
    for ch, c in calib.items():
        out.append(
            {
                "token": tok("calibrated_sensor", scene, ch),
                "sensor_token": tok("sensor", ch),
                "translation": [float(v) for v in c.sensor_to_ego[:3, 3]],
                "rotation": [float(v) for v in matrix_to_quaternion(c.sensor_to_ego[:3, :3])],
                "camera_intrinsic": [] if c.intrinsic is None else [[float(v) for v in row] for row in c.intrinsic],
            }
        )
    return out


def pose_record(token: str, t_us: int, x: float, y: float, yaw: float) -> dict:
    return {
        "token": token,
        "timestamp": int(t_us),
        "rotation": [float(v) for v in yaw_quaternion(yaw)],
        "translation": [float(x), float(y), 0.0],
    }


def sample_data_records(tok: Tokens, frames: list[Frame], sample_tokens: dict, image_hw: tuple[int, int]) -> list[dict]:
    """sample_data records with prev/next chains per (scene, channel), in time order."""
    chains: dict[tuple, list[Frame]] = defaultdict(list)
    for f in frames:
        chains[(f.scene, f.channel)].append(f)
    out = []
    for (scene, channel), chain in chains.items():
        chain.sort(key=lambda f: f.t_us)
        lidar = channel in SENSOR_MODALITY
        for i, f in enumerate(chain):
            out.append(
                {
                    "token": f.token,
                    "sample_token": sample_tokens[(scene, f.sample)],
                    "ego_pose_token": f.token,
                    "calibrated_sensor_token": tok("calibrated_sensor", scene, channel),
                    "timestamp": f.t_us,
                    "fileformat": "pcd" if lidar else "jpg",
                    "is_key_frame": f.key,
                    "height": 0 if lidar else image_hw[0],
                    "width": 0 if lidar else image_hw[1],
                    "filename": f.filename,
                    "prev": chain[i - 1].token if i else "",
                    "next": chain[i + 1].token if i + 1 < len(chain) else "",
                }
            )
    return out


def annotation_records(tok: Tokens, sightings: list[dict], sample_tokens: dict) -> tuple[list[dict], list[dict]]:
    """(instance, sample_annotation) records from per-keyframe sightings of annotated objects.

    A sighting is {scene, sample, uid, category, attribute, translation, size, yaw, num_lidar_pts,
    visibility}; an instance is one object in one scene, its annotations chained in time."""
    by_instance: dict[tuple, list[dict]] = defaultdict(list)
    for s in sightings:
        by_instance[(s["scene"], s["uid"])].append(s)
    instances, annotations = [], []
    for (scene, uid), seen in sorted(by_instance.items()):
        seen.sort(key=lambda s: s["sample"])
        inst_token = tok("instance", scene, uid)
        ann_tokens = [tok("sample_annotation", scene, uid, s["sample"]) for s in seen]
        for i, s in enumerate(seen):
            annotations.append(
                {
                    "token": ann_tokens[i],
                    "sample_token": sample_tokens[(scene, s["sample"])],
                    "instance_token": inst_token,
                    "visibility_token": visibility_token(s["visibility"]),
                    "attribute_tokens": [tok("attribute", s["attribute"])] if s["attribute"] else [],
                    "translation": [float(v) for v in s["translation"]],
                    "size": [float(v) for v in s["size"]],
                    "rotation": [float(v) for v in yaw_quaternion(s["yaw"])],
                    "prev": ann_tokens[i - 1] if i else "",
                    "next": ann_tokens[i + 1] if i + 1 < len(seen) else "",
                    "num_lidar_pts": int(s["num_lidar_pts"]),
                    "num_radar_pts": 0,
                }
            )
        instances.append(
            {
                "token": inst_token,
                "category_token": tok("category", seen[0]["category"]),
                "nbr_annotations": len(seen),
                "first_annotation_token": ann_tokens[0],
                "last_annotation_token": ann_tokens[-1],
            }
        )
    return instances, annotations


def map_mask(x_max_m: float, y_max_m: float, centre_y, half_width_m: float) -> np.ndarray:
    """uint8 semantic-prior mask at 0.1 m/pixel in the devkit's orientation (row 0 = max y):
    255 within ``half_width_m`` of the centreline (driveable surface and sidewalks), else 0."""
    xs = (np.arange(int(np.ceil(x_max_m / 0.1))) + 0.5) * 0.1
    ys = y_max_m - (np.arange(int(np.ceil(y_max_m / 0.1))) + 0.5) * 0.1  # row centres, top row first
    mask = np.zeros((len(ys), len(xs)), dtype=np.uint8)
    for start in range(0, len(xs), 4096):  # column blocks keep the float temporaries small
        cy = centre_y(xs[start : start + 4096])
        mask[:, start : start + 4096] = np.where(np.abs(ys[:, None] - cy[None, :]) < half_width_m, 255, 0)
    return mask
