"""Reading one keyframe's raw files (a LiDAR sweep, camera images), with errors that name the file.

Stages call these instead of numpy/PIL directly so that a missing, truncated or corrupt file fails
only its own row, with a message a user can act on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import RowError

POINT_RANGE_M = ((-51.2, 51.2), (-51.2, 51.2), (-5.0, 3.0))  # docs/METHOD.md section 1, LiDAR frame


def load_points(path: Path) -> np.ndarray:
    """(N, 5) float32 x, y, z, intensity, ring of a ``.pcd.bin`` sweep; every value finite (a NaN
    or infinity fails the row here, naming the file, instead of reaching a loss)."""
    return load_float_records(path, ("x", "y", "z", "intensity", "ring"))


def read_array(path: Path, dtype, what: str, missing: str = "") -> np.ndarray:
    """The flat contents of a raw binary file; a missing or unreadable file fails its row, naming
    it (``what``: e.g. 'LiDAR file'; ``missing``: what to add when it does not exist)."""
    try:
        return np.fromfile(path, dtype=dtype)
    except FileNotFoundError:
        raise RowError(f"{path}: {what} missing{missing}") from None
    except OSError as exc:
        raise RowError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None


def load_float_records(path: Path, fields: tuple[str, ...]) -> np.ndarray:
    """(N, len(fields)) float32 of a LiDAR file of float32 records (nuScenes' x, y, z, intensity,
    ring; KITTI's x, y, z, remission), every value finite."""
    raw = read_array(path, np.float32, "LiDAR file")
    width = len(fields)
    if raw.size == 0 or raw.size % width:
        raise RowError(f"{path}: truncated LiDAR file ({raw.nbytes} bytes is not a whole number of {4 * width}-byte points)")
    points = raw.reshape(-1, width)
    finite = np.isfinite(points)
    if not finite.all():
        bad = np.flatnonzero(~finite.all(axis=1))
        names = [name for name, ok in zip(fields, finite.all(axis=0)) if not ok]
        raise RowError(
            f"{path}: {len(bad)} of {len(points)} points have non-finite values (in {', '.join(names)}; first at point {bad[0]}: "
            f"{points[bad[0]].tolist()})"
        )
    return points


def in_range(points: np.ndarray) -> np.ndarray:
    """Mask of the points inside the method's point range (strict bounds, LiDAR frame)."""
    keep = np.ones(len(points), dtype=bool)
    for axis, (lo, hi) in enumerate(POINT_RANGE_M):
        keep &= (points[:, axis] > lo) & (points[:, axis] < hi)
    return keep


def load_image(path: Path, size_hw: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB, optionally resized (bilinear) to ``size_hw``; the whole file is decoded,
    so a truncated or corrupt image fails here."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            rgb = image.convert("RGB")
    except FileNotFoundError:
        raise RowError(f"{path}: image missing") from None
    except UnidentifiedImageError:
        raise RowError(f"{path}: not an image file (corrupt?)") from None
    except OSError as exc:
        raise RowError(f"{path}: corrupt image ({exc})") from None
    if size_hw is not None and rgb.size != (size_hw[1], size_hw[0]):
        rgb = rgb.resize((size_hw[1], size_hw[0]), Image.BILINEAR)
    return np.asarray(rgb)
