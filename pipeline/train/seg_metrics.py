"""Semantic segmentation metrics (docs/METHOD.md section 8): a confusion matrix over the 16 classes
(the ignore label 0 excluded), per-class IoU and mIoU, as a table and as JSON."""

from __future__ import annotations

import numpy as np

from pipeline.data.classes import SEGMENTATION_CLASSES

CLASS_NAMES = SEGMENTATION_CLASSES[1:]  # the 16 evaluated classes; label k is CLASS_NAMES[k - 1]
N_CLASSES = len(CLASS_NAMES)


def confusion(labels: np.ndarray, predictions: np.ndarray, n_classes: int = N_CLASSES) -> np.ndarray:
    """(C, C) int64 counts, rows = ground truth, columns = prediction, both in 1..C; points labelled
    0 (ignore) are left out. Predictions must be in 1..C."""
    labels, predictions = np.asarray(labels).ravel(), np.asarray(predictions).ravel()
    if labels.shape != predictions.shape:
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    keep = labels != 0
    labels, predictions = labels[keep].astype(np.int64) - 1, predictions[keep].astype(np.int64) - 1
    if len(labels) and (labels.max() >= n_classes or labels.min() < 0):
        raise ValueError(f"labels must be in 0..{n_classes}, got {labels.min() + 1}..{labels.max() + 1}")
    if len(predictions) and (predictions.min() < 0 or predictions.max() >= n_classes):
        raise ValueError(f"predictions must be in 1..{n_classes}")
    return np.bincount(labels * n_classes + predictions, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def iou(matrix: np.ndarray) -> np.ndarray:
    """(C,) IoU = TP / (TP + FP + FN) per class; NaN only for a class neither in the ground truth nor
    predicted (0 / 0), which does not count in the mIoU. A class predicted but absent from the ground
    truth scores 0 and counts: the nuScenes devkit's ``LidarSegEval`` convention, so hvd's mIoU and
    the devkit's agree on the same predictions."""
    tp = np.diag(matrix).astype(np.float64)
    gt, pred = matrix.sum(axis=1), matrix.sum(axis=0)
    union = gt + pred - tp
    out = np.full(len(tp), np.nan)
    scored = union > 0
    out[scored] = tp[scored] / union[scored]
    return out


def report(matrix: np.ndarray, class_names: tuple[str, ...] = CLASS_NAMES) -> dict:
    """Everything ``hvd eval`` writes: per-class IoU, mIoU over the classes scored (in the ground
    truth or predicted), accuracy, the confusion matrix. ``class_names``: of labels 1..C (nuScenes'
    16 unless given)."""
    if matrix.shape != (len(class_names), len(class_names)):
        raise ValueError(f"a {matrix.shape} confusion matrix for {len(class_names)} classes")
    per_class = iou(matrix)
    total = int(matrix.sum())
    in_truth = matrix.sum(axis=1) > 0
    return {
        "miou": float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan"),
        "accuracy": float(np.trace(matrix) / total) if total else float("nan"),
        "points": total,
        "classes": list(class_names),
        "iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, per_class)},
        "classes_scored": [name for name, v in zip(class_names, per_class) if not np.isnan(v)],
        "classes_present": [name for name, present in zip(class_names, in_truth) if present],  # in the ground truth
        "confusion": matrix.tolist(),
    }


def table(result: dict) -> str:
    """The per-class IoU as a plain-text table, then mIoU and accuracy."""
    width = max(len(n) for n in result["classes"])
    lines = [f"{'class':<{width}}  IoU %   points"]
    matrix = np.asarray(result["confusion"])
    for k, name in enumerate(result["classes"]):
        value = result["iou"][name]
        shown = "   -  " if value is None else f"{100 * value:6.2f}"
        lines.append(f"{name:<{width}}  {shown}  {int(matrix[k].sum()):>7d}")
    lines.append(f"{'mIoU':<{width}}  {100 * result['miou']:6.2f}  over {len(result['classes_scored'])} classes (in the ground truth or predicted)")
    lines.append(f"{'accuracy':<{width}}  {100 * result['accuracy']:6.2f}  {result['points']} points")
    return "\n".join(lines)
