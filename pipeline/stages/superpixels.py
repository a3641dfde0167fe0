"""Superpixels of every camera image (docs/METHOD.md section 2), relabelled to a dense range with
the per-image segment count stored, by one of several algorithms at a configurable working resolution.

``algorithm`` picks the implementation; each has its own parameter block (only the chosen block is
part of the fingerprint, so editing another block never invalidates a store):

- ``skimage_slic``: the reference, scikit-image's ``slic`` as SLidR and Seal run it (n_segments 150,
  compactness 6, sigma 3 at full resolution). Selecting it alone reproduces the published setup.
- ``opencv_slic`` / ``opencv_slico``: OpenCV's SLIC and its zero-parameter variant SLICO
  (``cv2.ximgproc``, package opencv-contrib-python-headless), on the CIELAB image, with a fixed
  number of iterations, at a fraction of the image's resolution.

Parameters are given at full image resolution (``sigma_px`` is scaled with the working size, a
segment count is a count per image whatever the working size), so a reduced working resolution
changes the cost, not the meaning of the parameters. docs/BENCHMARKS.md compares the algorithms.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_serializer

from pipeline.data.sensor_data import load_image
from pipeline.errors import HvdError, StoreError
from pipeline.store.rowstore import ArraySpec
from pipeline.store.stage import StageInfo

VERSION = 1
N_CAMERAS = 6
ALGORITHMS = ("skimage_slic", "opencv_slic", "opencv_slico")
OPENCV_PACKAGE = "opencv-contrib-python-headless"


class SkimageSlic(BaseModel):
    """scikit-image's ``slic``: the reference (SLidR, Seal)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_segments: int = Field(150, ge=2, le=60000)
    compactness: float = Field(6.0, gt=0)
    sigma_px: float = Field(3.0, ge=0)  # Gaussian pre-smoothing at full resolution
    working_scale: float = Field(1.0, gt=0, le=1)  # SLIC runs at this fraction of the image's size


class OpencvSlico(BaseModel):
    """OpenCV's SLICO: SLIC with a compactness adapted per superpixel (no ``ruler``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_segments: int = Field(150, ge=2, le=60000)  # sets the region size: sqrt(H * W / n_segments)
    iterations: int = Field(5, ge=1, le=100)
    min_element_pct: int = Field(25, ge=0, le=100)  # segments below this % of the region size are merged
    working_scale: float = Field(1.0, gt=0, le=1)


class OpencvSlic(OpencvSlico):
    """OpenCV's SLIC: ``ruler`` is its compactness (larger: more regular segments). The defaults
    are the catalog's (tuned in bench/prep.py --tune: docs/BENCHMARKS.md)."""

    n_segments: int = Field(120, ge=2, le=60000)
    ruler: float = Field(10.0, gt=0)
    working_scale: float = Field(0.25, gt=0, le=1)


class SuperpixelParams(BaseModel):
    """Which algorithm, its parameters, and the map sizes.
    ``working_size`` (H, W): resolution the algorithm runs at, overriding its ``working_scale``
    (default: the image's own size times ``working_scale``); ``store_size`` (H, W): resolution of
    the stored map (default: the working size), nearest-neighbour."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    algorithm: Literal["skimage_slic", "opencv_slic", "opencv_slico"] = "opencv_slic"
    working_size: tuple[int, int] | None = None
    store_size: tuple[int, int] | None = None
    skimage_slic: SkimageSlic = SkimageSlic()
    opencv_slic: OpencvSlic = OpencvSlic()
    opencv_slico: OpencvSlico = OpencvSlico()

    @model_serializer(mode="wrap")
    def _chosen_block_only(self, handler):
        """Dump (and so fingerprint) only the chosen algorithm's block."""
        data = handler(self)
        return {k: v for k, v in data.items() if k not in ALGORITHMS or k == self.algorithm}

    @property
    def method(self) -> SkimageSlic | OpencvSlic | OpencvSlico:
        """The chosen algorithm's parameter block."""
        return getattr(self, self.algorithm)


STAGE = StageInfo(
    name="superpixels",
    version=VERSION,
    params=SuperpixelParams,
    suffix=".zarr",
    description="superpixel label map per camera image (dense ids) and segment count",
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
    """(working, stored) (H, W) of an image of size ``image_hw``."""
    scale = params.method.working_scale
    working = tuple(params.working_size or (max(2, round(image_hw[0] * scale)), max(2, round(image_hw[1] * scale))))
    return working, tuple(params.store_size or working)


def label_dtype(params: SuperpixelParams) -> str:
    return "uint8" if params.method.n_segments <= 200 else "uint16"


def prepare(store, params: SuperpixelParams, index) -> list[str]:
    """Driver side, before any row: fail at once, not once per keyframe, when the chosen algorithm's
    library is missing."""
    if params.algorithm.startswith("opencv_"):
        opencv_ximgproc()
    return []


def opencv_ximgproc():
    """``cv2.ximgproc``, or a clear error naming the package that provides it."""
    try:
        import cv2

        return cv2.ximgproc
    except (ImportError, AttributeError):
        raise HvdError(
            "the superpixel algorithms opencv_slic and opencv_slico need OpenCV's contrib modules (cv2.ximgproc), "
            f"which opencv-python-headless lacks: install {OPENCV_PACKAGE} at the version of the installed OpenCV "
            "(scripts/setup.sh does), or set the catalog's superpixels algorithm to skimage_slic"
        ) from None


def specs(params: SuperpixelParams, index) -> dict[str, ArraySpec]:
    _, (h, w) = sizes(params, image_size(index))
    return {
        "labels": ArraySpec((N_CAMERAS, h, w), label_dtype(params), chunk=(1, h, w)),
        "count": ArraySpec((N_CAMERAS,), "uint16"),
    }


def segment(rgb: np.ndarray, params: SuperpixelParams, full_width: int) -> np.ndarray:
    """Labels (H, W) of an RGB image at the working resolution (not yet dense) by the chosen algorithm."""
    method = params.method
    if params.algorithm == "skimage_slic":
        from skimage.segmentation import slic

        sigma = method.sigma_px * rgb.shape[1] / full_width
        return slic(rgb, n_segments=method.n_segments, compactness=method.compactness, sigma=sigma, start_label=0, channel_axis=-1)
    return _opencv_slic(rgb, params.algorithm, method)


def _opencv_slic(rgb: np.ndarray, algorithm: str, method: OpencvSlico) -> np.ndarray:
    """OpenCV's SLIC or SLICO on the 8-bit CIELAB image, one thread (the parallelism is one
    process per core), with a region size giving ``n_segments`` cells on the image."""
    ximgproc = opencv_ximgproc()
    import cv2

    cv2.setNumThreads(1)
    lab = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2Lab)
    region = max(2, round(float(np.sqrt(rgb.shape[0] * rgb.shape[1] / method.n_segments))))
    if algorithm == "opencv_slic":
        slic = ximgproc.createSuperpixelSLIC(lab, algorithm=ximgproc.SLIC, region_size=region, ruler=float(method.ruler))
    else:
        slic = ximgproc.createSuperpixelSLIC(lab, algorithm=ximgproc.SLICO, region_size=region)
    slic.iterate(method.iterations)
    if method.min_element_pct:
        slic.enforceLabelConnectivity(method.min_element_pct)
    return slic.getLabels()


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


def label_map(path, params: SuperpixelParams, image_hw) -> tuple[np.ndarray, int]:
    """(dense labels at the store size, count) of one camera image of size ``image_hw``."""
    working, stored = sizes(params, image_hw)
    return densify(segment(load_image(path, working), params, image_hw[1]), stored)


def compute(record: dict, params: SuperpixelParams, inputs=None, store=None) -> dict[str, np.ndarray]:
    image_hw = tuple(record["image_hw"][0])
    _, stored = sizes(params, image_hw)
    dtype = np.dtype(label_dtype(params))
    labels = np.zeros((N_CAMERAS, *stored), dtype=dtype)
    count = np.zeros(N_CAMERAS, dtype=np.uint16)
    for c, path in enumerate(record["cam_paths"]):
        dense, n = label_map(path, params, image_hw)
        if n > np.iinfo(dtype).max + 1:
            raise ValueError(f"{path}: {n} segments do not fit {dtype} (n_segments is {params.method.n_segments})")
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
