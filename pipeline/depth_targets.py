"""Depth targets: per camera image, the minimum LiDAR depth in each cell of the teacher's feature
grid (the full image resized to ``input_size``, cells of ``stride`` x ``stride`` input pixels),
float16, 0 where no point falls. Computed from the correspondences store.

Pixel convention: pixel (row, col) is centred on (v, u) = (row, col), so resizing scales the
*edge* coordinate u + 0.5, and the cell of a pairing is floor((u + 0.5) * W_in / W / stride).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline import correspondences
from pipeline.errors import RowError
from pipeline.rowstore import ArraySpec
from pipeline.stages import StageInfo

VERSION = 1
N_CAMERAS = 6


class DepthTargetParams(BaseModel):
    """The teacher cache's input size (H, W) and output stride: the grid the targets live on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_size: tuple[int, int] = (224, 416)
    stride: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _divisible(self):
        if self.input_size[0] % self.stride or self.input_size[1] % self.stride:
            raise ValueError(f"input_size {self.input_size} is not divisible by stride {self.stride}")
        return self

    @property
    def grid(self) -> tuple[int, int]:
        return self.input_size[0] // self.stride, self.input_size[1] // self.stride


STAGE = StageInfo(
    name="depth_targets",
    version=VERSION,
    params=DepthTargetParams,
    suffix=".zarr",
    description="min LiDAR depth per teacher-grid cell and camera (float16, 0 = no point)",
)


def specs(params: DepthTargetParams, index) -> dict[str, ArraySpec]:
    h, w = params.grid
    return {"depth": ArraySpec((N_CAMERAS, h, w), "float16", chunk=(1, h, w))}


def min_depth_grid(uv: np.ndarray, depth: np.ndarray, image_hw, params: DepthTargetParams) -> np.ndarray:
    """(h, w) float32 minimum depth per cell, 0 where empty."""
    h, w = params.grid
    scale = np.array([params.input_size[1] / image_hw[1], params.input_size[0] / image_hw[0]])
    cell = np.floor((uv.astype(np.float64) + 0.5) * scale / params.stride).astype(np.int64)
    ok = (cell[:, 0] >= 0) & (cell[:, 0] < w) & (cell[:, 1] >= 0) & (cell[:, 1] < h)
    flat = cell[ok, 1] * w + cell[ok, 0]
    grid = np.full(h * w, np.inf, dtype=np.float32)
    np.minimum.at(grid, flat, depth[ok].astype(np.float32))
    grid[~np.isfinite(grid)] = 0.0
    return grid.reshape(h, w)


def compute(record: dict, params: DepthTargetParams, inputs, store=None) -> dict[str, np.ndarray]:
    store = inputs["correspondences"]
    row = store.row_of(record["token"])
    if row is None or not store.is_done(row, record["row_hash"]):
        raise RowError(f"no correspondences for this keyframe yet: run `hvd prep correspondences` (or `hvd prep all`)")
    _, cams = correspondences.read(store, row)
    depth = np.stack([min_depth_grid(uv, d, record["image_hw"][c], params) for c, (_, uv, d) in enumerate(cams)])
    return {"depth": depth.astype(np.float16)}
