"""The sensor rig: a 32-beam spinning LiDAR on the roof and six cameras mounted as on the nuScenes
car, their calibrations, ray grids, trigger times, and the culling bounds that tell the ray
caster which rays a primitive can touch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.data.geometry import rigid, yaw_matrix
from pipeline.data.source import CAMERAS
from pipeline.synth.raycast import Primitives

LIDAR_CHANNEL = "LIDAR_TOP"
LIDAR_ELEVATIONS_DEG = np.linspace(-30.67, 10.67, 32)  # HDL-32E
LIDAR_MIN_RANGE_M, LIDAR_MAX_RANGE_M = 1.0, 70.0
SWEEP_PERIOD_US = 50_000  # 20 Hz
KEYFRAME_EVERY = 10  # a keyframe every 10th LiDAR sweep: 2 Hz
CAMERA_PERIOD_US = 500_000 // 6  # 12 Hz camera sweeps
CAMERA_RANGE_M = 160.0

# channel: (translation in the ego frame, yaw in degrees, focal length at 1600 px width)
_CAMERA_MOUNTS = {
    "CAM_FRONT": ((1.70, 0.0, 1.51), 0.0, 1266.4),
    "CAM_FRONT_RIGHT": ((1.55, -0.49, 1.50), -55.0, 1260.6),
    "CAM_BACK_RIGHT": ((1.05, -0.48, 1.56), -110.0, 1256.7),
    "CAM_BACK": ((0.05, 0.0, 1.56), 180.0, 809.2),
    "CAM_BACK_LEFT": ((1.05, 0.48, 1.56), 110.0, 1256.7),
    "CAM_FRONT_LEFT": ((1.52, 0.49, 1.51), 55.0, 1272.6),
}
# Cameras fire when the spinning LiDAR sweeps across them: offset from the LiDAR timestamp (ms).
CAMERA_OFFSETS_MS = {"CAM_FRONT": 0.0, "CAM_FRONT_RIGHT": 8.0, "CAM_BACK_RIGHT": 17.0, "CAM_BACK": 25.0, "CAM_BACK_LEFT": -17.0, "CAM_FRONT_LEFT": -8.0}
# Optical axes: camera x right, y down, z forward, expressed in the ego frame (x forward, z up).
_CAMERA_BASE = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class Calibration:
    sensor_to_ego: np.ndarray  # (4, 4)
    intrinsic: np.ndarray | None  # (3, 3) for cameras


def _tilt(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A small random rotation: real mounts are never exactly axis-aligned."""
    ax, ay = np.deg2rad(rng.uniform(-max_deg, max_deg, 2))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    return rx @ ry


def rig(width: int, height: int, rng: np.random.Generator) -> dict[str, Calibration]:
    """Calibrations of LIDAR_TOP and the six cameras, with per-log mounting jitter from ``rng``."""
    lidar = rigid(yaw_matrix(-np.pi / 2) @ _tilt(rng, 0.3), np.array([0.943, 0.0, 1.84]) + rng.normal(0, 0.005, 3))
    out = {LIDAR_CHANNEL: Calibration(lidar, None)}
    scale = width / 1600.0
    for channel in CAMERAS:
        translation, yaw_deg, focal = _CAMERA_MOUNTS[channel]
        rot = yaw_matrix(np.deg2rad(yaw_deg)) @ _tilt(rng, 0.6) @ _CAMERA_BASE
        f = focal * scale * (1 + rng.uniform(-0.005, 0.005))
        cx = width / 2 + rng.uniform(-10, 10) * scale
        cy = height / 2 + rng.uniform(-6, 6) * scale
        intrinsic = np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
        out[channel] = Calibration(rigid(rot, np.array(translation) + rng.normal(0, 0.005, 3)), intrinsic)
    return out


def camera_rays(intrinsic: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W, 3) camera-frame ray directions through pixel centres, scaled to z = 1 so that the
    ray parameter of a hit is its depth. Pixel (row, col) is centred on (u, v) = (col, row)."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    x = (u - intrinsic[0, 2]) / intrinsic[0, 0]
    y = (v - intrinsic[1, 2]) / intrinsic[1, 1]
    return np.stack([x, y, np.ones_like(x)], axis=-1)


def lidar_rays(azimuth_steps: int, elevations_deg: np.ndarray = LIDAR_ELEVATIONS_DEG) -> np.ndarray:
    """(B, A, 3) unit directions in the LiDAR frame: beam (ring) by azimuth; B beams at
    ``elevations_deg`` (the HDL-32E's 32 by default)."""
    el = np.deg2rad(np.asarray(elevations_deg, dtype=np.float64))[:, None]
    az = (2 * np.pi * np.arange(azimuth_steps) / azimuth_steps)[None, :]
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el) * np.ones_like(az)], axis=-1)


_CORNER_BITS = np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=bool)
_EDGES = np.array([(i, i | bit) for i in range(8) for bit in (1, 2, 4) if not i & bit])  # (12, 2)
_NEAR_M = 0.05


def _corners(prims: Primitives) -> np.ndarray:
    lo, hi = prims.bounds()
    return np.where(_CORNER_BITS[None], hi[:, None], lo[:, None])  # (N, 8, 3)


def camera_regions(prims: Primitives, world_to_cam: np.ndarray, intrinsic: np.ndarray, width: int, height: int):
    """(primitive, rows, cols): screen-space bounds of each primitive's bounding box, clipped to
    the part in front of the camera (edges crossing the near plane contribute their crossing)."""
    if not len(prims):
        return
    pts = _corners(prims) @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]  # (N, 8, 3)
    a, b = pts[:, _EDGES[:, 0]], pts[:, _EDGES[:, 1]]  # (N, 12, 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = (_NEAR_M - a[..., 2]) / (b[..., 2] - a[..., 2])
    crossing = (f > 0) & (f < 1)
    cut = a + np.where(crossing, f, 0.0)[..., None] * (b - a)
    cand = np.concatenate([pts, cut], axis=1)  # (N, 20, 3)
    valid = np.concatenate([pts[..., 2] >= _NEAR_M, crossing], axis=1)
    z = np.where(valid, cand[..., 2], 1.0)
    u = np.where(valid, intrinsic[0, 0] * cand[..., 0] / z + intrinsic[0, 2], np.nan)
    v = np.where(valid, intrinsic[1, 1] * cand[..., 1] / z + intrinsic[1, 2], np.nan)
    any_valid = valid.any(axis=1)
    with np.errstate(invalid="ignore"):
        u0, u1 = np.nanmin(np.where(any_valid[:, None], u, 0), axis=1), np.nanmax(np.where(any_valid[:, None], u, 0), axis=1)
        v0, v1 = np.nanmin(np.where(any_valid[:, None], v, 0), axis=1), np.nanmax(np.where(any_valid[:, None], v, 0), axis=1)
    c0 = np.clip(np.floor(u0) - 1, 0, width).astype(int)
    c1 = np.clip(np.ceil(u1) + 2, 0, width).astype(int)
    r0 = np.clip(np.floor(v0) - 1, 0, height).astype(int)
    r1 = np.clip(np.ceil(v1) + 2, 0, height).astype(int)
    for i in np.flatnonzero(any_valid & (c0 < c1) & (r0 < r1)):
        yield i, slice(r0[i], r1[i]), slice(c0[i], c1[i])


def lidar_regions(prims: Primitives, world_to_lidar: np.ndarray, azimuth_steps: int):
    """(primitive, all beams, azimuth columns) each primitive within range can reach."""
    if not len(prims):
        return
    lo, hi = prims.bounds()
    sensor = -world_to_lidar[:3, :3].T @ world_to_lidar[:3, 3]
    nearest = np.clip(sensor, lo, hi)
    reach = np.linalg.norm(nearest - sensor, axis=1) <= LIDAR_MAX_RANGE_M
    surrounds = (lo[:, 0] - 0.5 <= sensor[0]) & (sensor[0] <= hi[:, 0] + 0.5) & (lo[:, 1] - 0.5 <= sensor[1]) & (sensor[1] <= hi[:, 1] + 0.5)
    pts = _corners(prims) @ world_to_lidar[:3, :3].T + world_to_lidar[:3, 3]
    az = np.arctan2(pts[..., 1], pts[..., 0])
    centre = np.arctan2(pts[..., 1].mean(axis=1), pts[..., 0].mean(axis=1))
    rel = np.angle(np.exp(1j * (az - centre[:, None])))
    step = 2 * np.pi / azimuth_steps
    every = np.arange(azimuth_steps)
    for i in np.flatnonzero(reach):
        if surrounds[i] or rel[i].max() - rel[i].min() > np.pi:
            yield i, slice(None), every
            continue
        first = int(np.floor((centre[i] + rel[i].min()) / step)) - 1
        last = int(np.ceil((centre[i] + rel[i].max()) / step)) + 2
        yield i, slice(None), np.arange(first, last) % azimuth_steps
