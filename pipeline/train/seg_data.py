"""Downstream data (docs/METHOD.md section 8): LiDAR keyframes with their nuScenes-lidarseg labels
mapped to the 16 evaluation classes, the few-label scene selection, augmentation and sparse batches.

Reads the index and the raw sweeps and labels only (no stores): fine-tuning needs neither images nor
the teacher. Every point of the sweep is kept (the benchmark scores every point); labels come back
per point and the voxel inverse map carries predictions back to them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from pipeline.data.classes import segmentation_lut
from pipeline.data.splits import TRAIN_SPLITS, VAL_SPLITS, label_fraction_step, slidr_label_fraction
from pipeline.data.sensor_data import load_points
from pipeline.errors import RowError, StoreError
from pipeline.train.voxelize import InputSettings, student_input

class SegDataConfig(BaseModel):
    """Which keyframes, how many labels, how they are batched and augmented."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    catalog: str = "data_catalog.yaml"
    source: str | None = None
    dataset: Literal["nuscenes", "semantickitti"] = Field("nuscenes", description="nuscenes: nuScenes-lidarseg, 16 classes, the devkit's splits; semantickitti: 19 classes, sequences 00-07 and 09-10 train, 08 validates (the source must be of that format)")
    label_fraction: float = Field(1.0, gt=0, le=1, description="keep every k-th training scene as SLidR counts them (scene table order, the k-th, 2k-th, ...), k = round(1 / fraction): 0.01 -> every 100th; SemanticKITTI: every k-th training frame from the first")
    max_examples: int | None = Field(None, ge=1, description="use only the first N selected keyframes (tests)")
    batch_size: int = Field(16, ge=1)
    num_workers: int = Field(2, ge=0)
    augment: bool = True  # rotation U(0, 2 pi) about z, random x and y flips (training only)


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, ..., 21st, ..."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def downstream_splits(index) -> tuple[np.ndarray, str]:
    """(per row 'train', 'val' or '', where they come from). The devkit's official splits
    (train / mini_train, val / mini_val) when the dataset's scenes are in them, as in SLidR's
    protocol; otherwise (scene names the devkit does not know) the index's own pretraining split,
    named by its kind (e.g. 'seeded'), never called official."""
    official = np.asarray(index.column("official_split"))
    train, val = np.isin(official, TRAIN_SPLITS), np.isin(official, VAL_SPLITS)
    if train.any() and val.any():
        return np.where(train, "train", np.where(val, "val", "")), "official"
    return np.asarray(index.splits), str(index.meta.extra.get("split_kind", "seeded"))


def select_rows(index, split: str, label_fraction: float = 1.0, max_examples: int | None = None) -> tuple[np.ndarray, list[str]]:
    """(rows, scenes): the index rows of the downstream ``split`` ('train' or 'val',
    ``downstream_splits``), the training scenes thinned to a label fraction exactly as SLidR counts
    (``pipeline.data.splits.slidr_label_fraction``), and the scenes kept (in scene table order)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    which, source = downstream_splits(index)
    scene = np.asarray(index.column("scene"))
    rows = np.flatnonzero(which == split)
    table = index.meta.extra.get("scene_table") or sorted(set(scene.tolist()))
    in_split = set(scene[rows].tolist())
    scenes = [name for name in table if name in in_split]
    if split == "train" and label_fraction < 1.0:
        scenes = slidr_label_fraction(table, in_split, label_fraction)
        if not scenes:
            k = label_fraction_step(label_fraction)
            raise StoreError(
                f"label fraction {label_fraction:g} keeps every {ordinal(k)} of the {len(in_split)} {source} training scenes of {index.path}, "
                f"counted as SLidR does (the {ordinal(k)}, {ordinal(2 * k)}, ... in scene table order): none; use a fraction of at least 1/{len(in_split)} or more scenes"
            )
        rows = rows[np.isin(scene[rows], scenes)]
    rows = rows[:max_examples]
    if not len(rows):
        raise StoreError(f"the index {index.path} has no keyframes of the {source} {split!r} split (splits {sorted(set(which.tolist()) - {''})})")
    return rows, scenes


def load_labels(path: Path | None, n_points: int, token: str) -> np.ndarray:
    """(N,) uint8 16-class labels (0 = ignore) of a sweep's ``lidarseg`` file."""
    if path is None:
        raise RowError(f"sample {token}: no lidarseg labels in the dataset (fine-tuning needs nuScenes-lidarseg)")
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise RowError(f"sample {token}: cannot read labels {path} ({exc.strerror or exc})") from None
    if len(raw) != n_points:
        raise RowError(f"sample {token}: {path} has {len(raw)} labels for {n_points} points")
    lut = segmentation_lut()
    if raw.max(initial=0) >= len(lut):
        raise RowError(f"sample {token}: {path} has class index {raw.max()} (nuScenes-lidarseg has {len(lut)})")
    return lut[raw]


def rotation_flip(rng: np.random.Generator) -> np.ndarray:
    """3x3: rotation by U(0, 2 pi) about z, then x -> -x and y -> -y each with probability 1/2."""
    theta = rng.uniform(0.0, 2.0 * np.pi)
    c, s = np.cos(theta), np.sin(theta)
    flips = np.diag([-1.0 if rng.random() < 0.5 else 1.0, -1.0 if rng.random() < 0.5 else 1.0, 1.0])
    return flips @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class SegDataset(torch.utils.data.Dataset):
    """One example per keyframe; the augmentation of row r in epoch e is a function of (seed, e, r).
    ``input``: the convention the backbone was trained with (voxels and intensity scale)."""

    def __init__(self, index, rows: np.ndarray, *, augment: bool, seed: int = 0, input: InputSettings = InputSettings()) -> None:
        self.index, self.rows, self.augment, self.seed, self.epoch = index, np.asarray(rows), augment, seed, 0
        self.input = input

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, i: int) -> tuple[str, np.ndarray, np.ndarray]:
        """(token, (N, 4) float32 x, y, z, intensity on nuScenes' 0-255 scale, (N,) labels 0..C) of example i."""
        record = self.index.record(int(self.rows[i]))
        if record["problem"]:
            raise RowError(f"sample {record['token']} ({record['scene']}): {record['problem']}")
        points = load_points(record["lidar_path"])
        return record["token"], points[:, :4], load_labels(record["lidarseg_path"], len(points), record["token"])

    def __getitem__(self, i: int) -> dict:
        token, points, labels = self.load(i)
        xyz = points[:, :3].astype(np.float64)
        if self.augment:
            xyz = xyz @ rotation_flip(np.random.default_rng([self.seed, self.epoch, int(self.rows[i])])).T
        voxels, feats = student_input(xyz, points[:, 3], self.input)  # as in pretraining
        return {
            "token": token,
            "coords": voxels.coords,
            "feats": feats,
            "inverse": voxels.inverse,
            "labels": labels,
        }


def seg_collate(examples: list[dict]) -> dict:
    """Voxels per example (``sparse_input`` batches them), the inverse maps offset into the
    concatenated voxels, labels concatenated (points of example 0 first)."""
    offsets = np.cumsum([0] + [len(e["coords"]) for e in examples])
    return {
        "tokens": [e["token"] for e in examples],
        "size": len(examples),
        "coords": [torch.from_numpy(e["coords"]) for e in examples],
        "feats": [torch.from_numpy(e["feats"]) for e in examples],
        "inverse": torch.from_numpy(np.concatenate([e["inverse"] + offsets[b] for b, e in enumerate(examples)])),
        "labels": torch.from_numpy(np.concatenate([e["labels"] for e in examples]).astype(np.int64)),
        "points_per_example": [len(e["labels"]) for e in examples],
    }
