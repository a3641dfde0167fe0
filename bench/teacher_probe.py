"""How much class information does the cached teacher carry? A label-blind check of the image
signal the distillation can pass on, independent of any LiDAR training.

For every LiDAR point paired with a camera pixel, take (a) the cached teacher features at that pixel
(nearest cell of the feature grid; the PCA codes as stored) and (b) the pixel's RGB colour; fit a
nearest-class-mean classifier and a least-squares linear classifier on the training scenes' pairs and
score per-point mIoU on the validation scenes' pairs (the lidarseg labels of the paired points).

    .venv/bin/python bench/teacher_probe.py [--source synth-transfer] [--keyframes 16]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def pairs(stores, opened: dict, row: int, params) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features (P, C), rgb (P, 3), labels (P,)) of every paired point of an index row."""
    from pipeline.data.sensor_data import in_range, load_image, load_points
    from pipeline.stages import correspondences, teacher_cache
    from pipeline.train.seg_data import load_labels

    record = stores.index.record(row)
    points = load_points(record["lidar_path"])
    labels = load_labels(record["lidarseg_path"], len(points), record["token"])[in_range(points)]
    pair_store, tc = opened["correspondences"], opened["teacher_cache"]
    _, cams = correspondences.read(pair_store, pair_store.row_of(record["token"]))
    tc_row = tc.row_of(record["token"])
    feats, rgbs, labs = [], [], []
    for c, (idx, uv, _) in enumerate(cams):
        grid = teacher_cache.read(tc, tc_row, c, params)  # (C, h, w)
        h_img, w_img = record["image_hw"][c]
        _, h, w = grid.shape
        col = np.clip(np.floor((uv[:, 0] + 0.5) * w / w_img).astype(int), 0, w - 1)
        row_ = np.clip(np.floor((uv[:, 1] + 0.5) * h / h_img).astype(int), 0, h - 1)
        feats.append(grid[:, row_, col].T)
        image = load_image(record["cam_paths"][c])
        rgbs.append(image[np.clip(np.round(uv[:, 1]).astype(int), 0, h_img - 1), np.clip(np.round(uv[:, 0]).astype(int), 0, w_img - 1)] / 255.0)
        labs.append(labels[idx])
    return np.concatenate(feats), np.concatenate(rgbs), np.concatenate(labs)


def collect(stores, rows, params):
    opened = stores.open()
    parts = [pairs(stores, opened, int(r), params) for r in rows]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


def score(train_x, train_y, test_x, test_y) -> dict:
    from pipeline.train import seg_metrics

    keep = train_y > 0
    x, y = train_x[keep], train_y[keep]
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    x, tx = (x - mean) / std, (test_x - mean) / std
    classes = np.unique(y)
    centroids = np.stack([x[y == c].mean(axis=0) for c in classes])
    ncm = classes[np.argmin(((tx[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)]
    onehot = (y[:, None] == classes[None]).astype(np.float64)
    design = np.hstack([x, np.ones((len(x), 1))])
    weights = np.linalg.lstsq(design.T @ design + 1e-3 * np.eye(design.shape[1]), design.T @ onehot, rcond=None)[0]
    linear = classes[np.argmax(np.hstack([tx, np.ones((len(tx), 1))]) @ weights, axis=1)]
    majority = np.full(len(test_y), np.bincount(y).argmax())
    out = {}
    for name, pred in (("nearest class mean", ncm), ("linear (least squares)", linear), ("majority class", majority)):
        r = seg_metrics.report(seg_metrics.confusion(test_y, pred))
        out[name] = {"miou": r["miou"], "accuracy": r["accuracy"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", default=str(REPO / "data_catalog.yaml"))
    parser.add_argument("--source", default="synth-transfer")
    parser.add_argument("--keyframes", type=int, default=16, help="keyframes of each split")
    parser.add_argument("--out", type=Path, default=None, help="JSON file of the result")
    args = parser.parse_args()

    from pipeline.stages import Catalog
    from pipeline.train.pretrain_data import open_stores

    catalog = Catalog.load(args.catalog)
    stores = open_stores(catalog, args.source)
    params = stores.artifacts["teacher_cache"].params
    official = np.asarray(stores.index.column("official_split"))
    train_rows = np.flatnonzero(np.isin(official, ("train", "mini_train")))[:: max(1, int(np.sum(np.isin(official, ("train", "mini_train")))) // args.keyframes)][: args.keyframes]
    val_rows = np.flatnonzero(np.isin(official, ("val", "mini_val")))[: args.keyframes]
    tr_f, tr_rgb, tr_y = collect(stores, train_rows, params)
    va_f, va_rgb, va_y = collect(stores, val_rows, params)
    result = {
        "source": args.source,
        "weights": params.weights,
        "pairs": {"train": int(len(tr_y)), "val": int(len(va_y))},
        f"teacher features ({tr_f.shape[1]} channels)": score(tr_f, tr_y, va_f, va_y),
        "pixel RGB": score(tr_rgb, tr_y, va_rgb, va_y),
        "teacher features + RGB": score(np.hstack([tr_f, tr_rgb]), tr_y, np.hstack([va_f, va_rgb]), va_y),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
