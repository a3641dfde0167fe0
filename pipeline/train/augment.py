"""Training augmentation, in feature space, through one exact matrix per camera (docs/METHOD.md
section 3).

Cloud transforms give a 4x4 ``lidar_aug`` (p' = s (R p + t), then the flips); each camera gets a 3x3
``img_aug`` mapping original pixels (u = column, v = row) to the augmented image (crop, resize to the
teacher's input size, horizontal flip about width - 1). The cached teacher features, the superpixels,
the pairings and the depth targets are all moved through these matrices, so the teacher cache is
computed once and reused every epoch, and the LSS lift (``models.frustum``) inverts exactly the
same maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, field_validator

Fraction = Annotated[float, Field(gt=0, le=1)]


class AugmentConfig(BaseModel):
    """Training augmentations (docs/METHOD.md section 3); ``enabled: false`` gives the validation view.
    Probabilities lie in [0, 1], ranges are (low, high) with low <= high, and no number may be
    infinite or NaN."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    enabled: bool = True
    rotation_deg: float = Field(22.5, ge=0, le=180)
    scale: tuple[PositiveFloat, PositiveFloat] = (0.9, 1.1)
    translation_std_m: float = Field(0.5, ge=0)
    flip_y: float = Field(0.5, ge=0, le=1)
    flip_x: float = Field(0.5, ge=0, le=1)
    drop_cuboids: bool = True
    cuboid_max_ratio: float = Field(0.2, ge=0, le=1)
    min_pairings_per_camera: int = Field(1024, ge=0)
    crop_scale: tuple[Fraction, Fraction] = (0.3, 1.0)
    crop_ratio: tuple[PositiveFloat, PositiveFloat] = (14 / 9, 17 / 9)
    crop_min_pairings: int = Field(1024, ge=0)
    crop_min_fraction: float = Field(0.75, ge=0, le=1)
    crop_retries: int = Field(10, ge=0)  # ours: bounded, then the full image (the reference loops forever)
    flip_horizontal: float = Field(0.5, ge=0, le=1)

    @field_validator("scale", "crop_scale", "crop_ratio")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] > value[1]:
            raise ValueError("a (low, high) range needs low <= high")
        return value


# --- matrices ---------------------------------------------------------------------------------------


def lidar_matrix(theta_rad: float = 0.0, scale: float = 1.0, translation=(0.0, 0.0, 0.0), flip_x: bool = False, flip_y: bool = False) -> np.ndarray:
    """4x4 map p -> s (R_z(theta) p + t), then y -> -y if flip_y, then x -> -x if flip_x."""
    c, s_ = np.cos(theta_rad), np.sin(theta_rad)
    m = np.eye(4)
    m[:3, :3] = scale * np.array([[c, -s_, 0.0], [s_, c, 0.0], [0.0, 0.0, 1.0]])
    m[:3, 3] = scale * np.asarray(translation, dtype=np.float64)
    flips = np.diag([-1.0 if flip_x else 1.0, -1.0 if flip_y else 1.0, 1.0, 1.0])
    return flips @ m


def image_matrix(crop_uv: tuple[float, float, float, float], out_hw: tuple[int, int], flip: bool = False) -> np.ndarray:
    """3x3 map from original pixels to the augmented image: the crop box (u0, v0, width, height) --
    (u0, v0) its top-left corner in original pixel coordinates, where the image's own corner is
    (-0.5, -0.5) since pixel centres sit at integers -- is resized to ``out_hw`` (H, W), so that
    u' + 0.5 = (u - u0) * W / width; then, if ``flip``, u' -> (W - 1) - u'."""
    u0, v0, cw, ch = crop_uv
    h_out, w_out = out_hw
    sx, sy = w_out / cw, h_out / ch
    m = np.array([[sx, 0.0, -sx * u0 - 0.5], [0.0, sy, -sy * v0 - 0.5], [0.0, 0.0, 1.0]])
    if flip:
        m = np.array([[-1.0, 0.0, w_out - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ m
    return m


def apply_image_matrix(matrix: np.ndarray, uv: np.ndarray) -> np.ndarray:
    return uv @ matrix[:2, :2].T + matrix[:2, 2]


def inside(uv: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Pairings whose rounded pixel lies in an (H, W) image."""
    h, w = out_hw
    return (uv[:, 0] >= -0.5) & (uv[:, 0] < w - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < h - 0.5)


# --- sampling -------------------------------------------------------------------------------------------


def sample_lidar_matrix(config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    theta = np.deg2rad(rng.uniform(-config.rotation_deg, config.rotation_deg))
    scale = rng.uniform(*config.scale)
    translation = rng.normal(0.0, config.translation_std_m, 3)
    flip_y = rng.random() < config.flip_y
    flip_x = rng.random() < config.flip_x
    return lidar_matrix(theta, scale, translation, flip_x=flip_x, flip_y=flip_y)


def drop_cuboid(xyz: np.ndarray, pair_counts_after, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Mask of the points kept after removing those strictly inside a random cuboid (centred on a
    random point, half-size r * extent / 2, r ~ U(0, max ratio)); all kept if any camera would be
    left with fewer than ``min_pairings_per_camera`` pairings (``pair_counts_after(keep)``)."""
    keep = np.ones(len(xyz), dtype=bool)
    if not config.drop_cuboids or not len(xyz):
        return keep
    extent = xyz.max(axis=0) - xyz.min(axis=0)
    centre = xyz[rng.integers(len(xyz))]
    half = rng.uniform(0.0, config.cuboid_max_ratio) * extent / 2
    candidate = ~np.all(np.abs(xyz - centre) < half, axis=1)
    if np.all(pair_counts_after(candidate) >= config.min_pairings_per_camera):
        return candidate
    return keep


def sample_crop(image_hw, out_hw, uv: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """An image matrix with a random resized crop (kept when enough pairings survive: more than
    ``crop_min_pairings`` or more than ``crop_min_fraction`` of them) and a random flip; after
    ``crop_retries`` failures, the full image."""
    h, w = image_hw
    crop = (-0.5, -0.5, float(w), float(h))
    for _ in range(config.crop_retries):
        area = rng.uniform(*config.crop_scale) * h * w
        ratio = np.exp(rng.uniform(np.log(config.crop_ratio[0]), np.log(config.crop_ratio[1])))
        cw, ch = np.sqrt(area * ratio), np.sqrt(area / ratio)
        if cw > w or ch > h:
            continue
        box = (rng.uniform(-0.5, w - 0.5 - cw), rng.uniform(-0.5, h - 0.5 - ch), cw, ch)
        kept = inside(apply_image_matrix(image_matrix(box, out_hw), uv), out_hw).sum()
        if kept > config.crop_min_pairings or kept > config.crop_min_fraction * len(uv):
            crop = box
            break
    return image_matrix(crop, out_hw, flip=rng.random() < config.flip_horizontal)


def full_image_matrix(image_hw, out_hw) -> np.ndarray:
    """The validation view: the whole image resized to ``out_hw``."""
    return image_matrix((-0.5, -0.5, float(image_hw[1]), float(image_hw[0])), out_hw)


# --- resampling the cached maps ------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """Sample positions of an output grid in the ORIGINAL image, as normalised [-1, 1] coordinates
    (align_corners=False: -1 and 1 are the image's outer edges), whatever the stored resolution."""

    xy: np.ndarray  # (h, w, 2)


def sample_grid(matrix: np.ndarray, image_hw, out_hw, stride: int = 1) -> Grid:
    """Where the centres of the ``stride``-pixel cells of the augmented image come from."""
    h, w = out_hw[0] // stride, out_hw[1] // stride
    u = stride * np.arange(w) + (stride - 1) / 2
    v = stride * np.arange(h) + (stride - 1) / 2
    uv = np.stack(np.meshgrid(u, v, indexing="xy"), axis=-1).reshape(-1, 2)
    inv = np.linalg.inv(matrix)
    src = apply_image_matrix(inv, uv)
    norm = np.stack([2 * (src[:, 0] + 0.5) / image_hw[1] - 1, 2 * (src[:, 1] + 0.5) / image_hw[0] - 1], axis=-1)
    return Grid(norm.reshape(h, w, 2))


def resample_features(features: np.ndarray, grid: Grid):
    """(C, h', w') bilinear samples of a cached (C, h, w) feature map at the grid (zeros outside)."""
    import torch
    import torch.nn.functional as F

    src = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))[None]
    g = torch.from_numpy(grid.xy.astype(np.float32))[None]
    return F.grid_sample(src, g, mode="bilinear", padding_mode="zeros", align_corners=False)[0].numpy()


def resample_labels(labels: np.ndarray, grid: Grid) -> tuple[np.ndarray, int]:
    """Nearest samples of an (H, W) label map at the grid, relabelled densely (a crop drops
    segments): (labels, true count)."""
    h, w = labels.shape
    col = np.clip(np.floor((grid.xy[..., 0] + 1) / 2 * w), 0, w - 1).astype(np.int64)
    row = np.clip(np.floor((grid.xy[..., 1] + 1) / 2 * h), 0, h - 1).astype(np.int64)
    ids, dense = np.unique(labels[row, col], return_inverse=True)
    return dense.reshape(row.shape), len(ids)
