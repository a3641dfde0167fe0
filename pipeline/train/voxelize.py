"""Cartesian voxelisation of a LiDAR sweep, the student's input (docs/METHOD.md section 4).

Voxels of ``voxel_size_m`` (0.1 m) with floored coordinates, one representative point per voxel
(the first point of the voxel in input order; the student's input feature is that point's
intensity) and the point -> voxel inverse map, so per-voxel outputs come back to every point
(``voxel_features[inverse]``). Pure numpy, deterministic.

Voxel order: sorted lexicographically by (x, y, z) voxel coordinate, the order ``np.unique`` gives.
It depends only on the set of occupied voxels, not on the order of the points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.frustum import VOXEL_SIZE_M


@dataclass(frozen=True)
class Voxels:
    """The voxelisation of N points into M occupied voxels."""

    coords: np.ndarray  # (M, 3) int32 floor(xyz / voxel_size), sorted lexicographically
    first: np.ndarray  # (M,) int64 index of the first point (in input order) of each voxel
    inverse: np.ndarray  # (N,) int64 voxel of each point: coords[inverse] == floor(xyz / voxel_size)

    def __len__(self) -> int:
        return len(self.coords)


def voxel_coords(xyz: np.ndarray, voxel_size_m: float = VOXEL_SIZE_M) -> np.ndarray:
    """(N, 3) int32 voxel of each point: floor(xyz / voxel_size_m), computed in float64 whatever
    the dtype of ``xyz``."""
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must be (N, 3) point coordinates, got shape {xyz.shape}")
    if not voxel_size_m > 0:
        raise ValueError(f"voxel_size_m must be positive, got {voxel_size_m}")
    if not np.isfinite(xyz).all():
        bad = int(np.flatnonzero(~np.isfinite(xyz).all(axis=1))[0])
        raise ValueError(f"xyz has non-finite coordinates (first at point {bad}): drop such points before voxelising")
    cells = np.floor(xyz.astype(np.float64) / voxel_size_m)
    limit = np.iinfo(np.int32).max
    if len(cells) and np.abs(cells).max() >= limit:
        raise ValueError(f"xyz / {voxel_size_m} exceeds the int32 voxel range: are the points in metres?")
    return cells.astype(np.int32)


def voxelize(xyz: np.ndarray, voxel_size_m: float = VOXEL_SIZE_M) -> Voxels:
    """Voxelise points ``xyz`` (N, 3) in metres into cubes of ``voxel_size_m``.

    ``coords[inverse] == floor(xyz / voxel_size_m)`` and ``inverse[first] == arange(M)``; the
    voxels are sorted by coordinate and ``first[v]`` is the smallest point index in voxel v.
    """
    cells = voxel_coords(xyz, voxel_size_m)  # (N, 3)
    if len(cells) == 0:
        return Voxels(coords=np.zeros((0, 3), np.int32), first=np.zeros(0, np.int64), inverse=np.zeros(0, np.int64))
    # np.unique sorts with a stable sort when asked for indices, so ``first`` is each voxel's first
    # occurrence; rows are compared field by field (signed), hence lexicographic (x, y, z) order.
    coords, first, inverse = np.unique(cells, axis=0, return_index=True, return_inverse=True)
    return Voxels(
        coords=np.ascontiguousarray(coords, dtype=np.int32),
        first=first.astype(np.int64),
        inverse=inverse.reshape(-1).astype(np.int64),
    )
