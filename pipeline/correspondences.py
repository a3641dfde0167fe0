"""Point-pixel correspondences: for every keyframe and camera, the LiDAR points that project into
the image, with their pixel position (u = column, v = row, original pixels, float) and depth.

The projection goes LiDAR -> ego(t_lidar) -> global -> ego(t_camera) -> camera -> pixels, so the ego
motion between the sweep and each camera's exposure is accounted for. Point indices refer to the
cloud after the method's range filter (``pipeline.sensor_data.in_range``), in file order.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from pipeline.errors import RowError
from pipeline.geometry import invert
from pipeline.rowstore import ArraySpec, RowStore
from pipeline.sensor_data import in_range, load_points
from pipeline.stages import StageInfo

VERSION = 1
N_CAMERAS = 6


class CorrespondenceParams(BaseModel):
    """A pairing is kept when depth > ``min_depth_m`` and ``uv_min <= u < width - uv_margin``
    (likewise v with the height). The defaults keep exactly the points whose rounded pixel
    (row, col) = round(v, u) lies in the image; nuscenes-devkit's own rendering uses
    ``uv_min=1, uv_margin=1``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_depth_m: float = 1.0
    uv_min: float = -0.5
    uv_margin: float = 0.5


STAGE = StageInfo(
    name="correspondences",
    version=VERSION,
    params=CorrespondenceParams,
    suffix=".zarr",
    description="per keyframe and camera: point index, u, v (original pixels), depth",
)


def specs(params: CorrespondenceParams, index) -> dict[str, ArraySpec]:
    """Ragged pairings padded to a per-camera capacity (the largest sweep of the index: a point
    appears at most once per camera), one chunk per (row, camera); ``counts`` holds the number of
    points in range, then the number of pairings of each camera."""
    capacity = int(-(-max(int(index.column("lidar_points").max()), 1) // 1024) * 1024)
    return {
        "point": ArraySpec((N_CAMERAS, capacity), "int32", chunk=(1, capacity)),
        "uvd": ArraySpec((N_CAMERAS, capacity, 3), "float32", chunk=(1, capacity, 3)),
        "counts": ArraySpec((1 + N_CAMERAS,), "int32"),
    }


def lidar_to_cameras(record: dict) -> np.ndarray:
    """(6, 4, 4): LiDAR frame at the sweep time -> each camera frame at its own exposure time."""
    lidar_to_global = record["ego_to_global_lidar"] @ record["lidar_to_ego"]
    global_to_cam = invert(record["cam_to_ego"]) @ invert(record["ego_to_global_cam"])
    return global_to_cam @ lidar_to_global


def project(xyz: np.ndarray, lidar_to_cam: np.ndarray, intrinsic: np.ndarray, image_hw, params: CorrespondenceParams):
    """(point indices, uv (M, 2), depth (M,)) of the points of ``xyz`` (LiDAR frame) kept in one camera."""
    cam = xyz @ lidar_to_cam[:3, :3].T + lidar_to_cam[:3, 3]
    depth = cam[:, 2]
    front = depth > params.min_depth_m
    pix = cam[front] @ intrinsic.T
    uv = pix[:, :2] / pix[:, 2:3]
    height, width = image_hw
    inside = (
        (uv[:, 0] >= params.uv_min)
        & (uv[:, 0] < width - params.uv_margin)
        & (uv[:, 1] >= params.uv_min)
        & (uv[:, 1] < height - params.uv_margin)
    )
    idx = np.flatnonzero(front)[inside]
    return idx, uv[inside], depth[idx]


def compute(record: dict, params: CorrespondenceParams, inputs=None) -> dict[str, np.ndarray]:
    points = load_points(record["lidar_path"])
    if len(points) != record["lidar_points"]:
        raise RowError(f"{record['lidar_path']}: {len(points)} points, the index says {record['lidar_points']} (re-run hvd prep index)")
    xyz = points[in_range(points), :3].astype(np.float64)
    transforms = lidar_to_cameras(record)
    pairs = [project(xyz, transforms[c], record["intrinsics"][c], record["image_hw"][c], params) for c in range(N_CAMERAS)]
    longest = max(1, max(len(p[0]) for p in pairs))
    point = np.zeros((N_CAMERAS, longest), dtype=np.int32)
    uvd = np.zeros((N_CAMERAS, longest, 3), dtype=np.float32)
    for c, (idx, uv, depth) in enumerate(pairs):
        point[c, : len(idx)] = idx
        uvd[c, : len(idx), :2] = uv
        uvd[c, : len(idx), 2] = depth
    counts = np.array([len(xyz), *(len(p[0]) for p in pairs)], dtype=np.int32)
    return {"point": point, "uvd": uvd, "counts": counts}


def read(store: RowStore, row: int) -> tuple[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """(points in range, per camera (point index, uv (M, 2) float32, depth (M,) float32)) of a row."""
    counts = store.read("counts", row)
    point, uvd = store.read("point", row), store.read("uvd", row)
    cams = [(point[c, :n], uvd[c, :n, :2], uvd[c, :n, 2]) for c, n in enumerate(counts[1:])]
    return int(counts[0]), cams
