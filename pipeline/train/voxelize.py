"""Voxelisation of a LiDAR sweep and the student's input features (docs/METHOD.md section 4).

Two conventions, chosen by ``InputSettings`` (a run's ``model.input``), because pretrained weights
only make sense in the convention they were trained with:

- ``cartesian`` (hvd, HVDistill): cubes of ``voxel_size_m`` (0.1 m), floor(xyz / 0.1). The BEV head
  needs these: it reads x and y off the voxel coordinates.
- ``cylindrical`` (SLidR): floor(rho / 0.1), floor(phi in degrees), floor(z / 0.1), with
  rho = sqrt(x^2 + y^2) and phi = atan2(y, x) * 180 / pi, the coordinates SLidR hands to
  MinkowskiEngine's ``sparse_quantize`` (which floors). atan2 returns (-pi, pi], so the phi cells run
  from -180 to 180: a point on the negative x axis is in cell 180 when y = +0 and in cell -180 when
  y = -0; cells -180 and 179 touch in space but not in index. That is SLidR's convention and is kept
  as it is, since its weights were trained on it. A point on the z axis has rho = 0 and phi = 0.

Either way one representative point per voxel (the first point of the voxel in input order) and the
point -> voxel inverse map, so per-voxel outputs come back to every point (``voxel_features[inverse]``).
The input feature is that point's intensity / ``intensity_divisor`` (255: hvd; 1: SLidR's raw
intensity). Pure numpy, deterministic, computed in float64 whatever the dtype of the points.

Voxel order: sorted lexicographically by voxel coordinate ((x, y, z) or (rho, phi, z)), the order
``np.unique`` gives. It depends only on the set of occupied voxels, not on the order of the points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.frustum import VOXEL_SIZE_M

Voxelization = Literal["cartesian", "cylindrical"]


class InputSettings(BaseModel):
    """The student's input convention (``model.input`` of a run's config). Every checkpoint hvd writes
    records it, and fine-tuning takes it from the pretrained weights, so a network is never fed
    voxels or features of another kind than it was trained on."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    voxelization: Voxelization = Field("cartesian", description="cartesian: hvd and HVDistill (the BEV loss needs it); cylindrical: SLidR's (rho, phi in whole degrees, z)")
    voxel_size_m: float = Field(VOXEL_SIZE_M, gt=0, description="the cell size in metres: of x, y, z (cartesian), of rho and z (cylindrical; phi cells are 1 degree)")
    intensity_divisor: float = Field(255.0, gt=0, description="the input feature is intensity / this: 255 (hvd) or 1 (the raw intensity, SLidR's)")

    def describe(self) -> str:
        """E.g. 'cylindrical voxels of 0.1 m, intensity / 1 (SLidR's convention)'."""
        text = f"{self.voxelization} voxels of {self.voxel_size_m:g} m, intensity / {self.intensity_divisor:g}"
        if self == SLIDR_INPUT:
            return f"{text} (SLidR's convention)"
        if self == InputSettings():
            return f"{text} (hvd's default)"
        return text


SLIDR_INPUT = InputSettings(voxelization="cylindrical", voxel_size_m=0.1, intensity_divisor=1.0)


@dataclass(frozen=True)
class Voxels:
    """The voxelisation of N points into M occupied voxels."""

    coords: np.ndarray  # (M, 3) int32 voxel coordinates (voxel_coords), sorted lexicographically
    first: np.ndarray  # (M,) int64 index of the first point (in input order) of each voxel
    inverse: np.ndarray  # (N,) int64 voxel of each point: coords[inverse] == voxel_coords(xyz)

    def __len__(self) -> int:
        return len(self.coords)


def _scaled(xyz: np.ndarray, voxel_size_m: float, voxelization: Voxelization) -> np.ndarray:
    """(N, 3) float64 coordinates in cell units, before flooring."""
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must be (N, 3) point coordinates, got shape {xyz.shape}")
    if not voxel_size_m > 0:
        raise ValueError(f"voxel_size_m must be positive, got {voxel_size_m}")
    if not np.isfinite(xyz).all():
        bad = int(np.flatnonzero(~np.isfinite(xyz).all(axis=1))[0])
        raise ValueError(f"xyz has non-finite coordinates (first at point {bad}): drop such points before voxelising")
    xyz = xyz.astype(np.float64)
    match voxelization:
        case "cartesian":
            return xyz / voxel_size_m
        case "cylindrical":
            x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
            rho = np.sqrt(x * x + y * y) / voxel_size_m
            phi = np.arctan2(y, x) * 180 / np.pi  # degrees in (-180, 180]
            return np.stack([rho, phi, z / voxel_size_m], axis=1)
    raise ValueError(f"voxelization must be 'cartesian' or 'cylindrical', got {voxelization!r}")


def voxel_coords(xyz: np.ndarray, voxel_size_m: float = VOXEL_SIZE_M, voxelization: Voxelization = "cartesian") -> np.ndarray:
    """(N, 3) int32 voxel of each point: floor(xyz / voxel_size_m) (cartesian) or
    floor((rho / voxel_size_m, phi in degrees, z / voxel_size_m)) (cylindrical)."""
    cells = np.floor(_scaled(xyz, voxel_size_m, voxelization))
    limit = np.iinfo(np.int32).max
    if len(cells) and np.abs(cells).max() >= limit:
        raise ValueError(f"xyz / {voxel_size_m} exceeds the int32 voxel range: are the points in metres?")
    return cells.astype(np.int32)


def voxelize(xyz: np.ndarray, voxel_size_m: float = VOXEL_SIZE_M, voxelization: Voxelization = "cartesian") -> Voxels:
    """Voxelise points ``xyz`` (N, 3) in metres (module docstring for the two conventions).

    ``coords[inverse] == voxel_coords(xyz)`` and ``inverse[first] == arange(M)``; the voxels are
    sorted by coordinate and ``first[v]`` is the smallest point index in voxel v.
    """
    cells = voxel_coords(xyz, voxel_size_m, voxelization)  # (N, 3)
    if len(cells) == 0:
        return Voxels(coords=np.zeros((0, 3), np.int32), first=np.zeros(0, np.int64), inverse=np.zeros(0, np.int64))
    # np.unique sorts with a stable sort when asked for indices, so ``first`` is each voxel's first
    # occurrence; rows are compared field by field (signed), hence lexicographic order.
    coords, first, inverse = np.unique(cells, axis=0, return_index=True, return_inverse=True)
    return Voxels(
        coords=np.ascontiguousarray(coords, dtype=np.int32),
        first=first.astype(np.int64),
        inverse=inverse.reshape(-1).astype(np.int64),
    )


def student_input(xyz: np.ndarray, intensity: np.ndarray, settings: InputSettings) -> tuple[Voxels, np.ndarray]:
    """(voxels, (M, 1) float32 features) of a cloud in the convention ``settings``: the one place
    pretraining and fine-tuning turn points into the student's input."""
    intensity = np.asarray(intensity)
    if intensity.shape != (len(xyz),):
        raise ValueError(f"intensity must be (N,) = ({len(xyz)},), got shape {intensity.shape}")
    voxels = voxelize(xyz, settings.voxel_size_m, settings.voxelization)
    feats = (intensity[voxels.first].astype(np.float64) / settings.intensity_divisor).astype(np.float32)[:, None]
    return voxels, feats
