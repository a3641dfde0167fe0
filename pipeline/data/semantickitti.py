"""SemanticKITTI: its raw label ids, the learning map to the 19 evaluation classes, the standard split
by sequence, and reading its files (docs/METHOD.md section 8).

On disk (``DATAROOT/sequences/NN/``): ``velodyne/FFFFFF.bin`` (float32 x, y, z, remission per point),
``labels/FFFFFF.label`` (uint32 per point: the semantic raw id in the lower 16 bits, the instance id
in the upper 16), ``calib.txt``, ``poses.txt``, ``times.txt``. The facts here are those of the
dataset's ``semantic-kitti.yaml`` and of SLidR's downstream loader (sequences 00-07 and 09-10 train,
08 validates; a label fraction keeps every k-th of the sorted training frames).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.sensor_data import load_float_records, read_array
from pipeline.errors import RowError, SourceError

# Raw label ids of SemanticKITTI (semantic-kitti.yaml "labels").
RAW_LABELS: dict[int, str] = {
    0: "unlabeled",
    1: "outlier",
    10: "car",
    11: "bicycle",
    13: "bus",
    15: "motorcycle",
    16: "on-rails",
    18: "truck",
    20: "other-vehicle",
    30: "person",
    31: "bicyclist",
    32: "motorcyclist",
    40: "road",
    44: "parking",
    48: "sidewalk",
    49: "other-ground",
    50: "building",
    51: "fence",
    52: "other-structure",
    60: "lane-marking",
    70: "vegetation",
    71: "trunk",
    72: "terrain",
    80: "pole",
    81: "traffic-sign",
    99: "other-object",
    252: "moving-car",
    253: "moving-bicyclist",
    254: "moving-person",
    255: "moving-motorcyclist",
    256: "moving-on-rails",
    257: "moving-bus",
    258: "moving-truck",
    259: "moving-other-vehicle",
}

# The 19 evaluation classes; index 0 is "unlabeled" (ignored).
EVAL_CLASSES: tuple[str, ...] = (
    "unlabeled",
    "car",
    "bicycle",
    "motorcycle",
    "truck",
    "other-vehicle",
    "person",
    "bicyclist",
    "motorcyclist",
    "road",
    "parking",
    "sidewalk",
    "other-ground",
    "building",
    "fence",
    "vegetation",
    "trunk",
    "terrain",
    "pole",
    "traffic-sign",
)

# semantic-kitti.yaml "learning_map": raw id -> evaluation class (0 = ignore). Moving objects join
# their static class; bus, on-rails and other vehicles are "other-vehicle"; lane markings are road;
# outliers, other-structure and other-object are ignored.
LEARNING_MAP: dict[int, int] = {
    0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8,
    40: 9, 44: 10, 48: 11, 49: 12, 50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17,
    80: 18, 81: 19, 99: 0, 252: 1, 253: 7, 254: 6, 255: 8, 256: 5, 257: 5, 258: 4, 259: 5,
}  # fmt: skip

TRAIN_SEQUENCES: tuple[str, ...] = ("00", "01", "02", "03", "04", "05", "06", "07", "09", "10")
VAL_SEQUENCES: tuple[str, ...] = ("08",)
LABELLED_SEQUENCES: tuple[str, ...] = tuple(sorted(TRAIN_SEQUENCES + VAL_SEQUENCES))


def learning_lut() -> np.ndarray:
    """(65536,) int16: raw id (the lower 16 bits of a label) -> evaluation class 0..19; -1 for an
    id SemanticKITTI does not define."""
    lut = np.full(1 << 16, -1, dtype=np.int16)
    for raw, target in LEARNING_MAP.items():
        lut[raw] = target
    return lut


def sequence_split(sequence: str) -> str:
    """'train', 'val' or '' (test sequences 11-21, or anything else) of a sequence name."""
    return "train" if sequence in TRAIN_SEQUENCES else "val" if sequence in VAL_SEQUENCES else ""


@dataclass(frozen=True)
class Frame:
    sequence: str
    frame: str  # e.g. '000042'
    points: Path
    labels: Path

    @property
    def token(self) -> str:
        return f"{self.sequence}/{self.frame}"


def frames(dataroot: Path, split: str) -> list[Frame]:
    """Every frame of the split's sequences that ``dataroot/sequences`` holds, sorted by (sequence,
    frame): the order SLidR's loader sorts its file paths in."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    root = Path(dataroot) / "sequences"
    if not root.is_dir():
        raise SourceError(f"{dataroot}: no sequences/ folder (a SemanticKITTI dataroot holds sequences/00, sequences/01, ...)")
    wanted = TRAIN_SEQUENCES if split == "train" else VAL_SEQUENCES
    out = []
    for sequence in sorted(p.name for p in root.iterdir() if p.name in wanted and p.is_dir()):
        for path in sorted((root / sequence / "velodyne").glob("*.bin")):
            out.append(Frame(sequence, path.stem, path, root / sequence / "labels" / f"{path.stem}.label"))
    return out


def label_fraction_frames(frames_: list[Frame], label_fraction: float) -> list[Frame]:
    """Every k-th frame, k = round(1 / fraction), counted from the first over the training frames
    sorted by (sequence, frame), as SLidR thins SemanticKITTI (``sorted(files)[::k]``): 1 % keeps
    frames 0, 100, 200, ... of the concatenated training sequences."""
    from pipeline.data.splits import label_fraction_step

    return frames_[:: label_fraction_step(label_fraction)]


def load_scan(path: Path) -> np.ndarray:
    """(N, 4) float32 x, y, z, remission of a ``velodyne/*.bin`` file, every value finite."""
    return load_float_records(path, ("x", "y", "z", "remission"))


def load_labels(path: Path, n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """(semantic raw ids uint16, instance ids uint16) of a ``labels/*.label`` file of ``n_points``."""
    raw = read_array(path, np.uint32, "label file", " (fine-tuning and evaluation need SemanticKITTI's labels)")
    if len(raw) != n_points:
        raise RowError(f"{path}: {len(raw)} labels for {n_points} points")
    return (raw & 0xFFFF).astype(np.uint16), (raw >> 16).astype(np.uint16)


def eval_labels(path: Path, n_points: int) -> np.ndarray:
    """(N,) uint8 evaluation classes 0..19 (0 = ignore) of a label file, through the learning map."""
    semantic, _ = load_labels(path, n_points)
    mapped = learning_lut()[semantic]
    if (mapped < 0).any():
        bad = sorted(set(semantic[mapped < 0].tolist()))
        raise RowError(f"{path}: raw label ids {bad[:5]} are not SemanticKITTI's")
    return mapped.astype(np.uint8)


def read_matrices(path: Path) -> dict[str, np.ndarray]:
    """``calib.txt``: name -> 3x4 matrix (lines 'NAME: 12 numbers')."""
    out = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            name, values = line.split(":", 1)
            out[name.strip()] = np.array(values.split(), dtype=np.float64).reshape(3, 4)
    return out


def read_poses(path: Path) -> np.ndarray:
    """``poses.txt``: (F, 4, 4), one 3x4 row-major pose per line."""
    rows = np.loadtxt(path, dtype=np.float64, ndmin=2).reshape(-1, 3, 4)
    bottom = np.broadcast_to(np.array([0.0, 0.0, 0.0, 1.0]), (len(rows), 1, 4))
    return np.concatenate([rows, bottom], axis=1)
