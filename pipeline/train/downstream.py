"""Which downstream dataset a fine-tuning run trains and evaluates on (``data.dataset``): its classes,
its splits, its few-label selection and its examples, behind one call (``open_split``), so that
fine-tuning and ``hvd eval`` treat nuScenes-lidarseg and SemanticKITTI alike: the same model (with as
many outputs as evaluation classes), losses, pretrained loading, input convention and run folder.

SemanticKITTI is read straight from ``DATAROOT/sequences`` (no index, no stores). Its remission (0-1)
is scaled to nuScenes' intensity range (0-255) when read, so ``model.input``'s intensity divisor means
the same on both datasets: hvd's convention (/ 255) feeds the remission itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.data import semantickitti as kitti
from pipeline.data.classes import SEGMENTATION_CLASSES
from pipeline.errors import HvdError, StoreError
from pipeline.train.seg_data import SegDataConfig, SegDataset, downstream_splits, select_rows
from pipeline.train.voxelize import InputSettings

# The evaluation classes of each dataset, label 0 (ignore) left out: label k is CLASSES[k - 1].
CLASSES: dict[str, tuple[str, ...]] = {"nuscenes": SEGMENTATION_CLASSES[1:], "semantickitti": kitti.EVAL_CLASSES[1:]}
REMISSION_SCALE = 255.0  # SemanticKITTI remission -> nuScenes' intensity scale


def n_classes(dataset: str) -> int:
    return len(CLASSES[dataset])


class SemanticKittiDataset(SegDataset):
    """One example per SemanticKITTI frame, as ``SegDataset`` makes them (augmentation, voxels,
    features); labels are the learning map's 0..19."""

    def __init__(self, frames: list[kitti.Frame], *, augment: bool, seed: int = 0, input: InputSettings = InputSettings()) -> None:
        super().__init__(None, np.arange(len(frames)), augment=augment, seed=seed, input=input)
        self.frames = frames

    def load(self, i: int) -> tuple[str, np.ndarray, np.ndarray]:
        frame = self.frames[i]
        scan = kitti.load_scan(frame.points)
        points = np.concatenate([scan[:, :3], scan[:, 3:4] * np.float32(REMISSION_SCALE)], axis=1)
        return frame.token, points, kitti.eval_labels(frame.labels, len(scan))


@dataclass
class Split:
    """A split ready to batch: ``dataset``, its ``rows`` (of the index for nuScenes, positions in
    the frame list for SemanticKITTI), the ``scenes`` (nuScenes) or sequences kept, where the split
    comes from, and (nuScenes) the index."""

    dataset: SegDataset
    rows: np.ndarray
    scenes: list[str]
    split_source: str
    unit: str  # what one example is: "keyframes" or "frames"
    group: str  # what examples come in: "scenes" or "sequences"
    index: object | None = None


def open_split(catalog, data: SegDataConfig, split: str, *, label_fraction: float = 1.0, max_examples: int | None = None, augment: bool = False, seed: int = 0, input: InputSettings = InputSettings(), source: str | None = None) -> Split:
    """The ``split`` ('train' or 'val') of ``data.dataset`` in the catalog's source (``source`` or
    ``data.source``), thinned to ``label_fraction`` (training) and cut to ``max_examples``."""
    src = catalog.source(source or data.source)
    if data.dataset != src.format:
        hint = "--dataset semantickitti" if src.format == "semantickitti" else "a SemanticKITTI source (format: semantickitti in the catalog)"
        raise HvdError(f"data.dataset is {data.dataset} but source {src.name} is a {src.format} dataset ({src.dataroot}): use {hint}")
    if data.dataset == "semantickitti":
        return _semantickitti_split(src, split, label_fraction, max_examples, augment, seed, input)
    from pipeline.stages.index import ensure_index

    index, _ = ensure_index(catalog, src.name)
    rows, scenes = select_rows(index, split, label_fraction, max_examples)
    dataset = SegDataset(index, rows, augment=augment, seed=seed, input=input)
    return Split(dataset, rows, scenes, downstream_splits(index)[1], "keyframes", "scenes", index)


def _semantickitti_split(src, split: str, label_fraction: float, max_examples: int | None, augment: bool, seed: int, input: InputSettings) -> Split:
    frames = kitti.frames(src.dataroot, split)
    if not frames:
        wanted = "00-07, 09-10" if split == "train" else "08"
        raise StoreError(f"{src.dataroot}/sequences has no frames of the SemanticKITTI {split!r} split (sequences {wanted})")
    if split == "train" and label_fraction < 1.0:
        frames = kitti.label_fraction_frames(frames, label_fraction)
    frames = frames[:max_examples]
    sequences = sorted({f.sequence for f in frames})
    dataset = SemanticKittiDataset(frames, augment=augment, seed=seed, input=input)
    return Split(dataset, dataset.rows, sequences, "SemanticKITTI standard", "frames", "sequences")
