"""``hvd eval``'s plots, drawn with matplotlib on an Agg canvas (no display, no pyplot state): the
confusion matrix as a heat map and the per-class IoU as a bar chart, for any list of classes.

Each returns the picture (H, W, 3) uint8 and where in it the numbers were drawn (cell centres,
bar extents, in pixels), so a test can read the picture back against the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

CONFUSION_CMAP = "Blues"
BAR_COLOUR = "#2b6cb0"


def _figure(width_in: float, height_in: float, dpi: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _pixels(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _to_pixel(fig, ax, x, y) -> np.ndarray:
    """Display (row, col) of data points (x, y) of ``ax`` in the rendered array (matplotlib's
    display origin is the bottom-left corner)."""
    xy = ax.transData.transform(np.column_stack([np.ravel(x), np.ravel(y)]))
    height = fig.canvas.get_width_height()[1]
    return np.column_stack([height - xy[:, 1], xy[:, 0]])


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Each ground-truth row divided by its total (the recall of each prediction); NaN for a class
    with no points in the ground truth."""
    matrix = np.asarray(matrix, dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, matrix / np.where(totals > 0, totals, 1), np.nan)


@dataclass
class Chart:
    rgb: np.ndarray  # (H, W, 3) uint8
    anchors: np.ndarray  # confusion: (C, C, 2) row, col of each cell's centre; IoU: (C, 2, 2) start and end pixel of each bar


def confusion_chart(matrix: np.ndarray, classes: list[str], title: str = "confusion matrix (rows: ground truth, normalised)", dpi: int = 100) -> Chart:
    """A heat map of the row-normalised confusion matrix (rows: ground truth, columns:
    prediction), the share in per cent written in cells of at least 1 %; rows of classes absent
    from the ground truth in grey."""
    import matplotlib

    n = len(classes)
    matrix = np.asarray(matrix)
    if matrix.shape != (n, n):
        raise ValueError(f"a confusion matrix of {n} classes must be {n} x {n}, got {matrix.shape}")
    share = row_normalised(matrix)
    size = 2.0 + 0.4 * n
    fig = _figure(size + 1.0, size, dpi)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps[CONFUSION_CMAP].with_extremes(bad="#d0d0d0")
    image = ax.imshow(np.ma.masked_invalid(share), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title, fontsize=9)
    for i in range(n):
        for j in range(n):
            if np.isfinite(share[i, j]) and share[i, j] >= 0.01:
                ax.text(j, i, f"{100 * share[i, j]:.0f}", ha="center", va="center", fontsize=6, color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the row")
    rgb = _pixels(fig)
    jj, ii = np.meshgrid(np.arange(n), np.arange(n))
    centres = _to_pixel(fig, ax, jj, ii).reshape(n, n, 2)
    return Chart(rgb, centres)


def iou_chart(iou: dict[str, float | None], classes: list[str], title: str = "", dpi: int = 100) -> Chart:
    """Horizontal bars of each class's IoU in per cent (0 to 100), in the order of ``classes``,
    the value written after each bar; a class not scored (None: neither in the ground truth nor
    predicted) gets no bar and a dash."""
    n = len(classes)
    values = np.array([np.nan if iou.get(c) is None else 100 * float(iou[c]) for c in classes])
    fig = _figure(6.4, 1.0 + 0.25 * n, dpi)
    ax = fig.add_subplot()
    heights = np.nan_to_num(values, nan=0.0)
    ax.barh(range(n), heights, height=0.7, color=BAR_COLOUR)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_ylim(n - 0.5, -0.5)  # the first class on top
    ax.set_xlim(0, 100)
    ax.set_xlabel("IoU %")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_title(title, fontsize=9)
    for k, v in enumerate(values):
        ax.text((0 if np.isnan(v) else v) + 1, k, "-" if np.isnan(v) else f"{v:.1f}", va="center", fontsize=7)
    rgb = _pixels(fig)
    starts = _to_pixel(fig, ax, np.zeros(n), np.arange(n))
    ends = _to_pixel(fig, ax, heights, np.arange(n))
    return Chart(rgb, np.stack([starts, ends], axis=1))


def eval_charts(result: dict) -> dict[str, Chart]:
    """The confusion matrix and IoU chart of an ``hvd eval`` report (its ``classes``,
    ``confusion``, ``iou`` and ``miou``), whatever its class list."""
    classes = list(result["classes"])
    where = " ".join(str(result[k]) for k in ("source", "split") if result.get(k))
    miou = result.get("miou")
    title = f"per-class IoU{' on ' + where if where else ''}" + (f", mIoU {100 * miou:.1f} %" if miou is not None and np.isfinite(miou) else "")
    return {
        "confusion": confusion_chart(np.asarray(result["confusion"]), classes),
        "iou": iou_chart(result["iou"], classes, title=title),
    }


def write_eval_charts(result: dict, report_path: Path) -> list[Path]:
    """Write the charts of an ``hvd eval`` report next to its JSON: ``<stem>-confusion.png`` and
    ``<stem>-iou.png``."""
    from pipeline.viz.draw import write_png

    report_path = Path(report_path)
    return [write_png(report_path.with_name(f"{report_path.stem}-{name}.png"), chart.rgb) for name, chart in eval_charts(result).items()]
