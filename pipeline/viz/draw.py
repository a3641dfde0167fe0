"""Drawing on (H, W, 3) uint8 arrays: depth colours, superpixel boundaries, projected points, grids,
shared-basis PCA colours, bird's-eye-view canvases, titled panels side by side, and PNG writing.

Conventions: pixel (u, v) = (column, row) with centres at integers, as everywhere in hvd; a point
is drawn at pixel (round(v), round(u)). Bird's-eye views put forward (+y of the LiDAR frame) up and
+x to the right: BEV cell (ix, iy) is drawn at row ``size - 1 - iy``, column ``ix``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

DEPTH_CMAP = "turbo"  # near: blue, far: red
EMPTY = np.array([24, 24, 24], dtype=np.uint8)  # cells with no value
BOUNDARY = np.array([255, 255, 0], dtype=np.uint8)  # superpixel boundaries (yellow)
BACKGROUND = np.array([255, 255, 255], dtype=np.uint8)
TITLE_HEIGHT = 16


def colours(values: np.ndarray, vmin: float, vmax: float, cmap: str = DEPTH_CMAP) -> np.ndarray:
    """(..., 3) uint8 colours of ``values`` on a matplotlib colour map, linear from ``vmin`` to
    ``vmax`` (clipped): the one mapping every depth picture uses, so a test can ask which colour a
    depth should have."""
    import matplotlib

    scale = np.clip((np.asarray(values, dtype=np.float64) - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    return np.asarray(matplotlib.colormaps[cmap](scale, bytes=True))[..., :3]


def boundaries(labels: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose label differs from that of the pixel to their right or below (the
    last column and row compare with nothing beyond the image)."""
    labels = np.asarray(labels)
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge


def draw_boundaries(rgb: np.ndarray, labels: np.ndarray, colour: np.ndarray = BOUNDARY) -> np.ndarray:
    """A copy of ``rgb`` with the boundary pixels of an equally sized label map in ``colour``."""
    if labels.shape != rgb.shape[:2]:
        raise ValueError(f"label map {labels.shape} and image {rgb.shape[:2]} differ in size")
    out = rgb.copy()
    out[boundaries(labels)] = colour
    return out


def draw_points(rgb: np.ndarray, uv: np.ndarray, depth: np.ndarray, vmin: float, vmax: float, radius: int = 0) -> np.ndarray:
    """A copy of ``rgb`` with points at pixels ``uv`` (M, 2) as squares of side 2 * radius + 1 in
    their depth's colour (``colours``), far ones first, so where points overlap the nearest shows."""
    out = rgb.copy()
    h, w = out.shape[:2]
    order = np.argsort(-np.asarray(depth), kind="stable")
    col = np.round(np.asarray(uv, dtype=np.float64)[order, 0]).astype(np.int64)
    row = np.round(np.asarray(uv, dtype=np.float64)[order, 1]).astype(np.int64)
    paint = colours(np.asarray(depth)[order], vmin, vmax)
    for dr in range(-radius, radius + 1):
        for dc in range(-radius, radius + 1):
            r, c = row + dr, col + dc
            ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
            out[r[ok], c[ok]] = paint[ok]  # later rows (nearer points) win
    return out


def value_grid(values: np.ndarray, vmin: float, vmax: float, valid: np.ndarray | None = None, cmap: str = DEPTH_CMAP) -> np.ndarray:
    """(h, w, 3) colours of a grid of values; cells not ``valid`` (default: value 0) in ``EMPTY``."""
    values = np.asarray(values)
    valid = values != 0 if valid is None else valid
    out = colours(values, vmin, vmax, cmap)
    out[~valid] = EMPTY
    return out


def resize_nearest(rgb: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize: output pixel (r, c) shows input cell (floor(r * h / H), floor(c * w / W))."""
    h, w = rgb.shape[:2]
    rows = np.arange(size_hw[0]) * h // size_hw[0]
    cols = np.arange(size_hw[1]) * w // size_hw[1]
    return rgb[rows][:, cols]


def blend(rgb: np.ndarray, over: np.ndarray, alpha: float, where: np.ndarray | None = None) -> np.ndarray:
    """``rgb`` with ``over`` laid on top at opacity ``alpha`` (only at ``where``, if given)."""
    mixed = np.round((1 - alpha) * rgb.astype(np.float64) + alpha * over.astype(np.float64)).astype(np.uint8)
    if where is None:
        return mixed
    out = rgb.copy()
    out[where] = mixed[where]
    return out


# --- PCA colours --------------------------------------------------------------------------------------


def pca_basis(rows: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(mean (C,), components (k, C)) of feature rows (N, C): the first ``k`` principal directions,
    each signed so that its largest coefficient is positive (a deterministic choice)."""
    rows = np.asarray(rows, dtype=np.float64)
    mean = rows.mean(axis=0)
    _, _, vt = np.linalg.svd(rows - mean, full_matrices=False)
    comps = vt[:k]
    if len(comps) < k:  # fewer rows or channels than components: pad with zero directions
        comps = np.vstack([comps, np.zeros((k - len(comps), rows.shape[1]))])
    signs = np.sign(comps[np.arange(k), np.argmax(np.abs(comps), axis=1)])
    return mean, comps * np.where(signs == 0, 1.0, signs)[:, None]


def pca_colours(sets: list[np.ndarray], percentile: float = 1.0) -> list[np.ndarray]:
    """(N_i, 3) uint8 colours of several sets of feature rows (N_i, C) through ONE basis fitted on
    all of them together and one scale per component (the ``percentile`` and ``100 - percentile``
    of all projections mapped to 0 and 255): equal features get equal colours in every set, so the
    pictures of two sets (teacher and student) are comparable."""
    sets = [np.asarray(s, dtype=np.float64).reshape(len(s), -1) for s in sets]
    everything = np.concatenate(sets)
    if not len(everything):
        return [np.zeros((0, 3), np.uint8) for _ in sets]
    mean, comps = pca_basis(everything)
    projected = [(s - mean) @ comps.T for s in sets]
    allp = np.concatenate(projected)
    lo, hi = np.percentile(allp, percentile, axis=0), np.percentile(allp, 100 - percentile, axis=0)
    span = np.where(hi - lo > 1e-12, hi - lo, 1.0)
    return [np.round(255 * np.clip((p - lo) / span, 0, 1)).astype(np.uint8) for p in projected]


def feature_images(maps: list[np.ndarray]) -> list[np.ndarray]:
    """(h, w, 3) uint8 PCA pictures of (C, h, w) feature maps, in one shared basis."""
    rows = [m.reshape(m.shape[0], -1).T for m in maps]
    return [c.reshape(m.shape[1], m.shape[2], 3) for c, m in zip(pca_colours(rows), maps)]


# --- bird's-eye views -----------------------------------------------------------------------------------


def bev_canvas(ixy: np.ndarray, paint: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 3): ``paint`` (K, 3) at BEV cells ``ixy`` (K, 2) = (ix, iy), forward up, the rest
    ``EMPTY``."""
    out = np.broadcast_to(EMPTY, (size, size, 3)).copy()
    ixy = np.asarray(ixy, dtype=np.int64)
    out[size - 1 - ixy[:, 1], ixy[:, 0]] = paint
    return out


def occupancy(ixy: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 3) grey levels: log(1 + points per BEV cell), the fullest cell white."""
    ixy = np.asarray(ixy, dtype=np.int64)
    counts = np.bincount(ixy[:, 0] * size + ixy[:, 1], minlength=size * size).reshape(size, size)
    level = np.log1p(counts) / max(np.log1p(counts.max()), 1e-12)
    cells = np.argwhere(counts > 0)
    grey = np.round(55 + 200 * level[cells[:, 0], cells[:, 1]]).astype(np.uint8)
    return bev_canvas(cells, np.repeat(grey[:, None], 3, axis=1), size)


# --- panels ---------------------------------------------------------------------------------------------


def titled(rgb: np.ndarray, title: str) -> np.ndarray:
    """``rgb`` under a white strip with ``title`` in black (Pillow's built-in font)."""
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (rgb.shape[1], TITLE_HEIGHT), tuple(int(x) for x in BACKGROUND))
    ImageDraw.Draw(strip).text((3, 2), title, fill=(0, 0, 0))
    return np.concatenate([np.asarray(strip), rgb])


def side_by_side(panels: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Panels left to right, top-aligned, on white, ``gap`` pixels apart."""
    return _join(panels, gap, axis=1)


def stacked(panels: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Panels top to bottom, left-aligned, on white, ``gap`` pixels apart."""
    return _join(panels, gap, axis=0)


def _join(panels: list[np.ndarray], gap: int, axis: int) -> np.ndarray:
    """Panels one after the other along ``axis`` (0: rows, 1: columns), aligned at the start of the other."""
    across = max(p.shape[1 - axis] for p in panels)
    along = sum(p.shape[axis] for p in panels) + gap * (len(panels) - 1)
    shape = (along, across, 3) if axis == 0 else (across, along, 3)
    out = np.broadcast_to(BACKGROUND, shape).copy()
    at = 0
    for p in panels:
        if axis == 0:
            out[at : at + p.shape[0], : p.shape[1]] = p
        else:
            out[: p.shape[0], at : at + p.shape[1]] = p
        at += p.shape[axis] + gap
    return out


def colour_bar(vmin: float, vmax: float, width: int, label: str, cmap: str = DEPTH_CMAP) -> np.ndarray:
    """A horizontal colour scale from ``vmin`` to ``vmax`` with its ends and ``label`` written under it."""
    from PIL import Image, ImageDraw

    ramp = colours(np.linspace(vmin, vmax, width), vmin, vmax, cmap)
    bar = np.repeat(ramp[None], 8, axis=0)
    text = Image.new("RGB", (width, 14), tuple(int(x) for x in BACKGROUND))
    draw = ImageDraw.Draw(text)
    draw.text((2, 1), f"{vmin:g}", fill=(0, 0, 0))
    draw.text((width // 2 - 3 * len(label), 1), label, fill=(0, 0, 0))
    right = f"{vmax:g}"
    draw.text((width - 6 * len(right) - 2, 1), right, fill=(0, 0, 0))
    return np.concatenate([bar, np.asarray(text)])


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 array as a PNG, atomically (a temporary file renamed into place)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(tmp, format="PNG", optimize=True)
    os.replace(tmp, path)
    return path
