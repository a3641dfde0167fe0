"""Point-pixel correspondences: for every keyframe and camera, the LiDAR points that project into
the image, with their pixel position (u = column, v = row, original pixels, float) and depth.

The projection goes LiDAR -> ego(t_lidar) -> global -> ego(t_camera) -> camera -> pixels, so the ego
motion between the sweep and each camera's exposure is accounted for. Point indices refer to the
cloud after the method's range filter (``pipeline.data.sensor_data.in_range``), in file order.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from pipeline.data.geometry import invert
from pipeline.data.sensor_data import in_range, load_points
from pipeline.errors import RowError
from pipeline.store.rowstore import ArraySpec, RowStore
from pipeline.store.stage import StageInfo

VERSION = 2  # 2: the pairings of all cameras packed back to back in each row
N_CAMERAS = 6
PAIR_CHUNK = 32768


class CorrespondenceParams(BaseModel):
    """A pairing is kept when depth > ``min_depth_m`` and ``uv_min <= u < width - uv_margin``
    (likewise v with the height). The defaults keep exactly the points whose rounded pixel
    (row, col) = round(v, u) lies in the image; nuscenes-devkit's own rendering uses
    ``uv_min=1, uv_margin=1``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_depth_m: float = 1.0
    uv_min: float = -0.5
    uv_margin: float = 0.5

    def keeps_depth(self, depth_m: np.ndarray) -> np.ndarray:
        """Mask of the camera-frame depths a pairing may have."""
        return depth_m > self.min_depth_m


STAGE = StageInfo(
    name="correspondences",
    version=VERSION,
    params=CorrespondenceParams,
    suffix=".zarr",
    description="per keyframe and camera: point index, u, v (original pixels), depth",
)


def reads(params: CorrespondenceParams) -> tuple[str, ...]:
    """The input files a row is computed from: a changed LiDAR file makes its row stale."""
    return ("lidar",)


def specs(params: CorrespondenceParams, index) -> dict[str, ArraySpec]:
    """Ragged pairings, the six cameras' back to back, with room for six times the largest sweep
    (a point pairs at most once per camera) in chunks of 32768: a row writes and reads only the
    chunks its pairings fill (one, for a nuScenes sweep). ``counts`` holds the number of points in
    range, then the number of pairings of each camera."""
    capacity = N_CAMERAS * int(-(-max(int(index.column("lidar_points").max()), 1) // 1024) * 1024)
    return {
        "point": ArraySpec((capacity,), "int32", chunk=(PAIR_CHUNK,)),
        "uvd": ArraySpec((capacity, 3), "float32", chunk=(PAIR_CHUNK, 3)),
        "counts": ArraySpec((1 + N_CAMERAS,), "int32"),
    }


def lidar_to_cameras(record: dict, lidar_to_ego: np.ndarray | None = None, ego_to_global: np.ndarray | None = None) -> np.ndarray:
    """(6, 4, 4): LiDAR frame at the sweep time -> each camera frame at its own exposure time. The
    sweep is the keyframe's unless another sweep's (4, 4) ``lidar_to_ego`` and ``ego_to_global``
    (at that sweep's time) are given: its points are then motion-compensated to each camera."""
    if lidar_to_ego is None:
        lidar_to_ego, ego_to_global = record["lidar_to_ego"], record["ego_to_global_lidar"]
    lidar_to_global = ego_to_global @ lidar_to_ego
    global_to_cam = invert(record["cam_to_ego"]) @ invert(record["ego_to_global_cam"])
    return global_to_cam @ lidar_to_global


def project(xyz: np.ndarray, lidar_to_cam: np.ndarray, intrinsic: np.ndarray, image_hw, params: CorrespondenceParams):
    """(point indices, uv (M, 2), depth (M,)) of the points of ``xyz`` (LiDAR frame) kept in one
    camera: depth as ``params.keeps_depth`` says, pixel within ``params.uv_min`` / ``uv_margin``
    (also used by ``pipeline.stages.depth_targets`` with its own params)."""
    cam = xyz @ lidar_to_cam[:3, :3].T + lidar_to_cam[:3, 3]
    depth = cam[:, 2]
    front = params.keeps_depth(depth)
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


def compute(record: dict, params: CorrespondenceParams, inputs=None, store=None) -> dict[str, np.ndarray]:
    points = load_points(record["lidar_path"])
    if len(points) != record["lidar_points"]:
        raise RowError(f"{record['lidar_path']}: {len(points)} points, the index says {record['lidar_points']} (re-run hvd prep index)")
    xyz = points[in_range(points), :3].astype(np.float64)
    transforms = lidar_to_cameras(record)
    pairs = [project(xyz, transforms[c], record["intrinsics"][c], record["image_hw"][c], params) for c in range(N_CAMERAS)]
    point = np.concatenate([idx for idx, _, _ in pairs]).astype(np.int32)
    uvd = np.concatenate([np.column_stack([uv, depth]) for _, uv, depth in pairs]).astype(np.float32).reshape(-1, 3)
    counts = np.array([len(xyz), *(len(p[0]) for p in pairs)], dtype=np.int32)
    return {"point": point, "uvd": uvd, "counts": counts}


def read(store: RowStore, row: int) -> tuple[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """(points in range, per camera (point index, uv (M, 2) float32, depth (M,) float32)) of a row."""
    counts = store.read("counts", row)
    total = int(counts[1:].sum())
    point, uvd = store.read("point", row, total), store.read("uvd", row, total)
    ends = np.cumsum(counts[1:])
    starts = ends - counts[1:]
    cams = [(point[a:b], uvd[a:b, :2], uvd[a:b, 2]) for a, b in zip(starts, ends)]
    return int(counts[0]), cams
