"""The drawing functions draw what they are given: a projected point's pixel has its depth's colour
(the nearest where points overlap), superpixel boundaries sit exactly where the label map changes,
one PCA basis colours equal features equally in every set, and the eval charts show their numbers."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from PIL import Image

from pipeline.viz import charts, draw


def test_each_point_pixel_has_the_colour_of_its_nearest_points_depth():
    rng = np.random.default_rng(0)
    image = np.full((40, 60, 3), 7, np.uint8)  # a colour no depth maps to
    uv = rng.uniform(-0.49, [59.49, 39.49], (300, 2))  # many share a pixel
    depth = rng.uniform(1, 60, 300)
    out = draw.draw_points(image, uv, depth, 1.0, 60.0)
    nearest = {}
    for (u, v), d in zip(uv, depth):
        key = (int(np.round(v)), int(np.round(u)))
        nearest[key] = min(d, nearest.get(key, np.inf))
    for (r, c), d in nearest.items():
        assert tuple(out[r, c]) == tuple(draw.colours(d, 1.0, 60.0)), (r, c, d)
    hit = np.zeros((40, 60), bool)
    hit[tuple(np.array(list(nearest)).T)] = True
    assert (out[~hit] == 7).all()
    # the colour map separates depths: near and far points differ
    assert tuple(draw.colours(2.0, 1, 60)) != tuple(draw.colours(50.0, 1, 60))


def test_superpixel_boundaries_sit_exactly_where_the_label_map_changes():
    rng = np.random.default_rng(1)
    labels = np.kron(rng.integers(0, 5, (6, 8)), np.ones((5, 4), np.int64))[:, :31]  # blocks, a ragged edge
    image = np.zeros(labels.shape + (3,), np.uint8)
    out = draw.draw_boundaries(image, labels)
    h, w = labels.shape
    for r in range(h):
        for c in range(w):
            changes = (c + 1 < w and labels[r, c] != labels[r, c + 1]) or (r + 1 < h and labels[r, c] != labels[r + 1, c])
            assert (tuple(out[r, c]) == tuple(draw.BOUNDARY)) == changes, (r, c)


def test_one_pca_basis_gives_equal_features_equal_colours_across_sets():
    rng = np.random.default_rng(2)
    teacher = rng.normal(size=(50, 16))
    student = teacher[::-1].copy()  # the same features, in another order
    other = rng.normal(size=(20, 16)) + 5
    t, s, o = draw.pca_colours([teacher, student, other])
    np.testing.assert_array_equal(t, s[::-1])
    assert len({tuple(x) for x in t}) > 40  # the colours tell features apart
    # the basis is fitted on all sets: the shifted set is far from the others along the first component
    assert abs(int(o[:, 0].astype(int).mean()) - int(t[:, 0].astype(int).mean())) > 100


def test_bev_canvas_puts_forward_up():
    canvas = draw.bev_canvas(np.array([[3, 250]]), np.array([[200, 0, 0]], np.uint8), 256)
    assert tuple(canvas[5, 3]) == (200, 0, 0)  # iy 250 (far ahead): near the top
    assert (canvas.reshape(-1, 3) != draw.EMPTY).any(axis=1).sum() == 1


def test_confusion_chart_cells_have_the_colour_of_their_row_share():
    matrix = np.array([[90, 10, 0], [30, 60, 10], [0, 0, 0]])  # the third class never in the ground truth
    chart = charts.confusion_chart(matrix, ["a", "b", "c"])
    cmap = matplotlib.colormaps[charts.CONFUSION_CMAP]
    cell = abs(chart.anchors[0, 1, 1] - chart.anchors[0, 0, 1])  # pixels per cell
    share = matrix / matrix.sum(axis=1, keepdims=True).clip(1)
    for i in range(3):
        for j in range(3):
            r, c = np.round(chart.anchors[i, j] + 0.3 * cell).astype(int)  # off the centre, away from the text
            want = np.array([208, 208, 208]) if i == 2 else np.array(cmap(share[i, j], bytes=True)[:3])
            assert np.abs(chart.rgb[r, c].astype(int) - want).max() <= 2, (i, j, chart.rgb[r, c], want)


def test_iou_chart_bars_are_as_long_as_the_ious(tmp_path):
    classes = ["road", "car", "tree", "cone"]
    iou = {"road": 0.9, "car": 0.45, "tree": 0.15, "cone": None}
    chart = charts.iou_chart(iou, classes)
    bar = np.array(matplotlib.colors.to_rgb(charts.BAR_COLOUR)) * 255
    lengths = []
    for (r0, c0), _ in chart.anchors:
        row = chart.rgb[int(round(r0))].astype(int)
        lengths.append(int((np.abs(row - bar).max(axis=1) <= 2).sum()))
    assert lengths[3] == 0
    assert lengths[0] > lengths[1] > lengths[2] > 0
    assert lengths[0] / lengths[1] == pytest.approx(2.0, rel=0.05) and lengths[0] / lengths[2] == pytest.approx(6.0, rel=0.1)
    # next to an eval report, read back as written
    result = {"classes": classes, "confusion": np.eye(4, dtype=int).tolist(), "iou": iou, "miou": 0.5, "split": "val"}
    paths = charts.write_eval_charts(result, tmp_path / "eval-val.json")
    assert [p.name for p in paths] == ["eval-val-confusion.png", "eval-val-iou.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(paths[1]).convert("RGB")), charts.iou_chart(iou, classes, title="per-class IoU on val, mIoU 50.0 %").rgb)
