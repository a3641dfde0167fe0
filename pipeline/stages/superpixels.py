"""Superpixels: SLIC on every camera image (docs/METHOD.md section 2), relabelled to a dense range
with the per-image segment count stored, at a configurable working resolution.

Parameters are given at full image resolution (``sigma_px`` is scaled with the working size), so a
reduced working resolution changes the cost, not the meaning of the parameters.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.data.sensor_data import load_image
from pipeline.errors import StoreError
from pipeline.store.rowstore import ArraySpec
from pipeline.store.stage import StageInfo

VERSION = 1
N_CAMERAS = 6


class SuperpixelParams(BaseModel):
    """SLIC as the reference runs it (n_segments 150, compactness 6, sigma 3 at 1600x900).
    ``working_size`` (H, W): resolution SLIC runs at (default: the image's own);
    ``store_size`` (H, W): resolution of the stored map (default: the working size), nearest-neighbour."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_segments: int = Field(150, ge=2, le=60000)
    compactness: float = 6.0
    sigma_px: float = 3.0
    working_size: tuple[int, int] | None = None
    store_size: tuple[int, int] | None = None


STAGE = StageInfo(
    name="superpixels",
    version=VERSION,
    params=SuperpixelParams,
    suffix=".zarr",
    description="SLIC label map per camera image (dense ids) and segment count",
)


def reads(params: SuperpixelParams) -> tuple[str, ...]:
    """The input files a row is computed from: a changed image makes its row stale."""
    return ("cams",)


def image_size(index) -> tuple[int, int]:
    """The (H, W) all camera images of the index share (a store holds one map size)."""
    sizes = {tuple(hw) for hw in index.column("cam_hw").reshape(-1, 2).tolist()}
    if len(sizes) != 1:
        raise StoreError(f"camera images of mixed sizes {sorted(sizes)}: set superpixels.working_size in the catalog")
    return sizes.pop()


def sizes(params: SuperpixelParams, image_hw) -> tuple[tuple[int, int], tuple[int, int]]:
    working = tuple(params.working_size or image_hw)
    return working, tuple(params.store_size or working)


def label_dtype(params: SuperpixelParams) -> str:
    return "uint8" if params.n_segments <= 200 else "uint16"


def specs(params: SuperpixelParams, index) -> dict[str, ArraySpec]:
    _, (h, w) = sizes(params, image_size(index))
    return {
        "labels": ArraySpec((N_CAMERAS, h, w), label_dtype(params), chunk=(1, h, w)),
        "count": ArraySpec((N_CAMERAS,), "uint16"),
    }


def segment(rgb: np.ndarray, params: SuperpixelParams, full_width: int) -> np.ndarray:
    """SLIC labels (H, W) of an RGB image at the working resolution (not yet dense)."""
    from skimage.segmentation import slic

    sigma = params.sigma_px * rgb.shape[1] / full_width
    return slic(rgb, n_segments=params.n_segments, compactness=params.compactness, sigma=sigma, start_label=0, channel_axis=-1)


def densify(labels: np.ndarray, out_hw: tuple[int, int]) -> tuple[np.ndarray, int]:
    """Nearest-neighbour resize to ``out_hw``, then relabel to 0..count-1 (SLIC ids are not dense,
    and downsampling can drop segments)."""
    h, w = labels.shape
    if (h, w) != tuple(out_hw):
        rows = ((np.arange(out_hw[0]) + 0.5) * h / out_hw[0]).astype(int)
        cols = ((np.arange(out_hw[1]) + 0.5) * w / out_hw[1]).astype(int)
        labels = labels[rows[:, None], cols[None, :]]
    ids, dense = np.unique(labels, return_inverse=True)
    return dense.reshape(labels.shape), len(ids)


def compute(record: dict, params: SuperpixelParams, inputs=None, store=None) -> dict[str, np.ndarray]:
    image_hw = tuple(record["image_hw"][0])
    working, stored = sizes(params, image_hw)
    dtype = np.dtype(label_dtype(params))
    labels = np.zeros((N_CAMERAS, *stored), dtype=dtype)
    count = np.zeros(N_CAMERAS, dtype=np.uint16)
    for c, path in enumerate(record["cam_paths"]):
        rgb = load_image(path, working)
        dense, n = densify(segment(rgb, params, image_hw[1]), stored)
        if n > np.iinfo(dtype).max + 1:
            raise ValueError(f"{n} segments do not fit {dtype}")
        labels[c], count[c] = dense, n
    return {"labels": labels, "count": count}


# --- quality against ground truth (benchmarks and tests) -----------------------------------------------


def _edges(labels: np.ndarray) -> np.ndarray:
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    return edge


def boundary_recall(segments: np.ndarray, truth: np.ndarray, tolerance_px: int = 2) -> float:
    """Fraction of ground-truth boundary pixels within ``tolerance_px`` of a superpixel boundary."""
    from scipy.ndimage import binary_dilation

    found = _edges(segments)
    if tolerance_px > 0:  # (scipy reads iterations=0 as "until nothing changes")
        found = binary_dilation(found, iterations=tolerance_px)
    wanted = _edges(truth)
    return float((found & wanted).sum() / max(wanted.sum(), 1))


def achievable_accuracy(segments: np.ndarray, truth: np.ndarray) -> float:
    """Achievable segmentation accuracy: the pixel accuracy if every superpixel took its majority
    ground-truth class. Superpixels that straddle classes (which the IPV loss averages over) lower it."""
    pairs = segments.astype(np.int64).ravel() * 65536 + truth.astype(np.int64).ravel()
    ids, counts = np.unique(pairs, return_counts=True)
    segment = ids // 65536
    best = np.zeros(segment.max() + 1, dtype=np.int64)
    np.maximum.at(best, segment, counts)
    return float(best.sum() / segments.size)
