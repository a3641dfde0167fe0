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
    try:
        raw = np.fromfile(path, dtype=np.float32)
    except FileNotFoundError:
        raise RowError(f"{path}: LiDAR file missing") from None
    except OSError as exc:
        raise RowError(f"{path}: cannot read LiDAR file ({exc.strerror or exc})") from None
    if raw.size == 0 or raw.size % 5:
        raise RowError(f"{path}: truncated LiDAR file ({raw.nbytes} bytes is not a whole number of 20-byte points)")
    points = raw.reshape(-1, 5)
    finite = np.isfinite(points)
    if not finite.all():
        bad = np.flatnonzero(~finite.all(axis=1))
        fields = [name for name, ok in zip(("x", "y", "z", "intensity", "ring"), finite.all(axis=0)) if not ok]
        raise RowError(
            f"{path}: {len(bad)} of {len(points)} points have non-finite values (in {', '.join(fields)}; first at point {bad[0]}: "
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
