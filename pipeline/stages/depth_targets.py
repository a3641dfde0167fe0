"""Depth targets: for every keyframe and camera, the (u, v, depth) of every LiDAR point that projects
into the image at ``min_depth_m <= depth < max_depth_m`` (camera-frame z, the range of the depth
bins in ``models.frustum``), u = column and v = row in original pixels, float32. Unlike the
correspondences there is no point-range filter: every return the camera sees can label a cell.

With ``sweeps: K > 1`` the points of the K - 1 LIDAR_TOP sweeps nearest in time to the keyframe's
(listed by the index) are added, each motion-compensated: sweep LiDAR -> ego(t_sweep) -> global ->
ego(t_camera) -> camera. Static surfaces line up; moving objects leave trails, one reason the
paper's setting is K = 1. A keyframe with fewer neighbouring sweeps uses those that exist (the
run says how many keyframes, see ``prepare``); a sweep file that is missing fails its keyframe.

The grid is not stored: training (``pipeline.train.pretrain_data``) maps each camera's (u, v)
through that camera's image-augmentation matrix and min-pools the depths onto the augmented teacher
grid with ``min_depth_grid``, whatever the teacher cache's input size and stride.

Pixel convention: pixel (row, col) is centred on (v, u) = (row, col), its edges at +-0.5, so an
image of width W spans u in [-0.5, W - 0.5), and an augmented point (u', v') falls in the cell
(floor((v' + 0.5) / stride), floor((u' + 0.5) / stride)) of the augmented image's grid.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.data.sensor_data import load_points
from pipeline.errors import RowError
from pipeline.stages import correspondences
from pipeline.stages.index import MAX_SWEEPS
from pipeline.store.rowstore import ArraySpec, RowStore
from pipeline.store.stage import StageInfo

VERSION = 2  # 2: every projected point (u, v, depth) from K sweeps, pooled onto the grid at training time
N_CAMERAS = 6
POINT_CHUNK = 32768
HEADROOM = 2  # room for sweeps with up to twice the points of the index's largest keyframe sweep


class DepthTargetParams(BaseModel):
    """``sweeps``: the K LiDAR sweeps nearest in time to the keyframe's, itself included (K = 1:
    the paper's setting). A point is kept when ``min_depth_m <= depth < max_depth_m`` and
    ``uv_min <= u < width - uv_margin`` (likewise v with the height): the correspondences' bounds,
    i.e. its rounded pixel lies in the image."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sweeps: int = Field(1, ge=1, le=1 + MAX_SWEEPS)
    min_depth_m: float = Field(1.0, gt=0)
    max_depth_m: float = 60.0
    uv_min: float = -0.5
    uv_margin: float = 0.5

    @model_validator(mode="after")
    def _range(self):
        if self.max_depth_m <= self.min_depth_m:
            raise ValueError(f"max_depth_m {self.max_depth_m} must exceed min_depth_m {self.min_depth_m}")
        return self

    def keeps_depth(self, depth_m: np.ndarray) -> np.ndarray:
        """Mask of the camera-frame depths a target may have (``correspondences.project`` asks)."""
        return (depth_m >= self.min_depth_m) & (depth_m < self.max_depth_m)


STAGE = StageInfo(
    name="depth_targets",
    version=VERSION,
    params=DepthTargetParams,
    suffix=".zarr",
    description="per keyframe and camera: u, v (original pixels), depth of every LiDAR point at 1-60 m (K sweeps)",
)


def reads(params: DepthTargetParams) -> tuple[str, ...]:
    """The input files a row is computed from: the keyframe's LiDAR file, and with ``sweeps > 1``
    its neighbouring sweeps (all indexed ones: a conservative superset of the K - 1 used)."""
    return ("lidar", "sweeps") if params.sweeps > 1 else ("lidar",)


def specs(params: DepthTargetParams, index) -> dict[str, ArraySpec]:
    """Ragged points, the six cameras' back to back, in chunks of 32768 (a row writes and reads only
    the chunks its points fill); ``counts`` holds the number of points of each camera. A point
    lands at most once per camera, so 6 x K x the largest sweep bounds a row, with ``HEADROOM``
    for sweeps larger than any keyframe's (chunks never written take no space)."""
    largest = int(-(-max(int(index.column("lidar_points").max()), 1) // 1024) * 1024)
    capacity = N_CAMERAS * params.sweeps * HEADROOM * largest
    return {"uvd": ArraySpec((capacity, 3), "float32", chunk=(POINT_CHUNK, 3)), "counts": ArraySpec((N_CAMERAS,), "int32")}


def prepare(store: RowStore, params: DepthTargetParams, index) -> list[str]:
    """A note when some keyframes have fewer neighbouring sweeps than ``sweeps`` asks for."""
    have = np.array([len(t) for t in index.column("sweep_timestamps")], dtype=np.int64)
    short = np.flatnonzero(have < params.sweeps - 1)
    if not len(short):
        return []
    return [
        f"depth_targets: sweeps {params.sweeps} asks for {params.sweeps - 1} neighbouring LiDAR sweeps per keyframe, "
        f"but {len(short)} of {len(index)} keyframes have fewer (as few as {have[short].min()}, e.g. sample "
        f"{index.tokens[short[0]]}): those accumulate the sweeps that exist"
    ]


def sweeps(record: dict, k: int) -> list[tuple[object, np.ndarray, np.ndarray]]:
    """(path, lidar_to_ego (4, 4), ego_to_global (4, 4)) of the keyframe's sweep, then of up to
    k - 1 neighbouring sweeps, nearest in time first."""
    own = [(record["lidar_path"], record["lidar_to_ego"], record["ego_to_global_lidar"])]
    return own + list(zip(record["sweep_paths"], record["sweep_lidar_to_ego"], record["sweep_ego_to_global"]))[: k - 1]


def _load(record: dict, i: int, path, k: int) -> np.ndarray:
    """(N, 3) float64 xyz of sweep ``i`` (0: the keyframe's), with errors naming the file."""
    if i == 0:
        points = load_points(path)
        if len(points) != record["lidar_points"]:
            raise RowError(f"{path}: {len(points)} points, the index says {record['lidar_points']} (re-run hvd prep index)")
        return points[:, :3].astype(np.float64)
    try:
        return load_points(path)[:, :3].astype(np.float64)
    except RowError as exc:
        raise RowError(
            f"{exc}: neighbouring sweep {i} of the {k - 1} that `depth_targets: {{sweeps: {k}}}` accumulates; "
            "restore the dataset's sweeps/ folder, or lower `sweeps` in the catalog"
        ) from None


def compute(record: dict, params: DepthTargetParams, inputs=None, store: RowStore | None = None) -> dict[str, np.ndarray]:
    """Per camera, the kept points of the keyframe's sweep (file order), then of each neighbouring
    sweep (nearest first): uvd (M, 3) float32 packed camera after camera, counts (6,) int32."""
    per_camera: list[list[np.ndarray]] = [[] for _ in range(N_CAMERAS)]
    for i, (path, lidar_to_ego, ego_to_global) in enumerate(sweeps(record, params.sweeps)):
        xyz = _load(record, i, path, params.sweeps)
        transforms = correspondences.lidar_to_cameras(record, lidar_to_ego, ego_to_global)  # (6, 4, 4)
        for c in range(N_CAMERAS):
            _, uv, depth = correspondences.project(xyz, transforms[c], record["intrinsics"][c], record["image_hw"][c], params)
            per_camera[c].append(np.column_stack([uv, depth]).reshape(-1, 3))
    uvd = np.concatenate([block for blocks in per_camera for block in blocks]).astype(np.float32)
    counts = np.array([sum(len(b) for b in blocks) for blocks in per_camera], dtype=np.int32)
    capacity = store.array("uvd").shape[1] if store is not None else len(uvd)
    if len(uvd) > capacity:
        raise RowError(
            f"{len(uvd)} depth points, more than the {capacity} the store has room for ({N_CAMERAS} cameras x "
            f"{params.sweeps} sweeps x {HEADROOM} x the largest keyframe sweep): is a sweep of this keyframe far "
            f"larger than every keyframe's? {[str(p) for p, _, _ in sweeps(record, params.sweeps)]}"
        )
    return {"uvd": uvd, "counts": counts}


def cameras(values: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per camera: uv (M, 2) in original pixels and depth (M,), of one row's ``uvd`` and ``counts``
    (``compute``'s output, or what ``read`` reads)."""
    ends = np.cumsum(values["counts"])
    return [(values["uvd"][end - n : end, :2], values["uvd"][end - n : end, 2]) for n, end in zip(values["counts"], ends)]


def read(store: RowStore, row: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per camera: uv (M, 2) float32 and depth (M,) float32 of a store row (only its chunks are read)."""
    counts = store.read("counts", row)
    return cameras({"uvd": store.read("uvd", row, int(counts.sum())), "counts": counts})


def min_depth_grid(uv_aug: np.ndarray, depth_m: np.ndarray, out_hw: tuple[int, int], stride: int) -> np.ndarray:
    """(H // stride, W // stride) float32: the minimum depth of the points in each cell of an
    (H, W) = ``out_hw`` augmented image, 0 where none. ``uv_aug`` (M, 2) are augmented pixels
    (u = column, v = row, centres at integers); a point lies in cell (floor((v + 0.5) / stride),
    floor((u + 0.5) / stride)), and points outside the image are dropped."""
    h, w = out_hw[0] // stride, out_hw[1] // stride
    cell = np.floor((np.asarray(uv_aug, dtype=np.float64) + 0.5) / stride).astype(np.int64)  # (M, 2) col, row
    ok = (cell[:, 0] >= 0) & (cell[:, 0] < w) & (cell[:, 1] >= 0) & (cell[:, 1] < h)
    grid = np.full(h * w, np.inf, dtype=np.float32)
    np.minimum.at(grid, cell[ok, 1] * w + cell[ok, 0], np.asarray(depth_m, dtype=np.float32)[ok])
    grid[~np.isfinite(grid)] = 0.0
    return grid.reshape(h, w)
