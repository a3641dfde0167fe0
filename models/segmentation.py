"""The downstream model (docs/METHOD.md section 8): the MinkUNet34C backbone with a new 1x1 head
over the 16 nuScenes-lidarseg classes, and loading pretrained backbone weights by name and shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from models.minkowski import ME
from models.student import MinkUNet34C, conv

N_CLASSES = 16  # nuScenes-lidarseg evaluation classes 1..16; label 0 (ignore) is never predicted


class SegmentationNet(nn.Module):
    """``backbone`` (MinkUNet34C, parameter names as in the pretraining student) + ``head`` (1x1
    conv 96 -> 16 with bias): per-voxel logits, row i <-> x.C[i]; logit k is class k + 1."""

    def __init__(self, n_classes: int = N_CLASSES, in_channels: int = 1, *, bn_momentum: float = 0.05, width: float = 1.0) -> None:
        super().__init__()
        self.backbone = MinkUNet34C(in_channels, bn_momentum=bn_momentum, width=width)
        self.head = conv(self.backbone.out_channels, n_classes, kernel_size=1, bias=True)

    def forward(self, x: ME.SparseTensor, *, frozen_backbone: bool = False) -> torch.Tensor:
        if frozen_backbone:
            with torch.no_grad():
                features = self.backbone(x)
        else:
            features = self.backbone(x)
        return self.head(features).F

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        """The head on dense (M, 96) backbone features: a 1x1 sparse convolution is a linear map of
        each row, so this equals ``forward`` on the same voxels."""
        return features @ self.head.kernel.reshape(features.shape[1], -1) + self.head.bias.reshape(-1)


@dataclass
class LoadReport:
    """What loading pretrained weights did, key by key (names of the downstream model)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, absent from the checkpoint: kept initialised
    mismatched: list[str] = field(default_factory=list)  # present with another shape: kept initialised
    unused: list[str] = field(default_factory=list)  # in the checkpoint, not in the model (e.g. pretraining heads)

    def summary(self) -> str:
        parts = [f"{len(self.loaded)} tensors loaded from {self.source}"]
        if self.missing:
            parts.append(f"{len(self.missing)} not in the checkpoint (initialised): {_prefixes(self.missing)}")
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} of another shape (initialised): {', '.join(self.mismatched[:5])}")
        if self.unused:
            parts.append(f"{len(self.unused)} checkpoint tensors unused: {_prefixes(self.unused)}")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {"source": self.source, "loaded": self.loaded, "missing": self.missing, "mismatched": self.mismatched, "unused": self.unused}


def _prefixes(keys: list[str]) -> str:
    """``backbone.stem.0.kernel, head.bias`` -> ``backbone.stem, head`` (first two name parts)."""
    seen: dict[str, None] = {}
    for key in keys:
        seen[".".join(key.split(".")[:2]) if key.count(".") > 1 else key.split(".")[0]] = None
    return ", ".join(seen)


def _read_pretrained(path: Path) -> object:
    """The contents of a pretrained-weights file, read as data only (``models.checkpoints``)."""
    from models.checkpoints import load_checkpoint
    from pipeline.errors import HvdError

    path = Path(path)
    if not path.is_file():
        raise HvdError(f"pretrained weights {path} do not exist")
    return load_checkpoint(path)


@dataclass
class Pretrained:
    """Pretrained weights read from a file: the tensors keyed as in ``SegmentationNet``, what kind of
    file it was, and what the file says about the network and its input."""

    path: Path
    # "hvd-pretrain" (an `hvd train pretrain` checkpoint), "state-dict" (a plain or wrapped state dict
    # of hvd's network), "slidr" / "hvdistill" (a checkpoint or state dict of SLidR's / HVDistill's
    # MinkUNet, renamed by ``models.slidr``; its tensors with no hvd counterpart keep their own names)
    kind: str
    state: dict[str, torch.Tensor]
    width: float | None = None  # the student width a pretraining run recorded (None: not recorded)
    # The input convention the weights were trained with, as ``model.input`` settings
    # ({"voxelization": "cartesian" | "cylindrical", "voxel_size_m": float, "intensity_divisor": float}),
    # or None when the file does not say (hvd's defaults then apply).
    input: dict | None = None


# The wrappers a state dict is found in: hvd's pretraining checkpoint, SLidR's / HVDistill's
# pretraining checkpoint (``model_points``; ``model_images`` is the image network), others.
WRAPPERS = ("student", "model_points", "model", "state_dict")
HVD_MODULES = ("backbone.", "head.", "final_1.", "bev_head.", "stem.", "down.", "up.")


def read_pretrained(path: Path) -> Pretrained:
    """Read a pretrained-weights file: an ``hvd train pretrain`` checkpoint (its ``student``), a
    SLidR / HVDistill pretraining checkpoint (its ``model_points``), a dict with a ``model`` /
    ``state_dict`` entry, or a plain state dict -- of hvd's network or of SLidR's / HVDistill's
    (told by their module names, ``models.slidr``). ``module.`` (DDP) and ``model.`` (SLidR's
    downstream module) prefixes are dropped, and bare backbone keys get ``backbone.``."""
    from models import slidr
    from pipeline.errors import HvdError

    path = Path(path)
    raw = _read_pretrained(path)
    config = raw.get("config") if isinstance(raw, dict) else None
    kind = "hvd-pretrain" if isinstance(raw, dict) and isinstance(raw.get("student"), dict) else "state-dict"
    state = raw
    for key in WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HvdError(f"{path} holds no state dict (expected an hvd or SLidR/HVDistill pretraining checkpoint, or a state dict)")
    state = slidr.strip_prefixes(state)
    theirs = slidr.detect(state)
    if theirs is not None:
        mapped, unmapped = slidr.slidr_to_hvd(state, theirs)
        return Pretrained(path=path, kind=theirs, state=mapped | {k: state[k] for k in unmapped}, input=slidr.input_convention(config, theirs))
    if not any(key.startswith(HVD_MODULES) for key in state):
        raise HvdError(
            f"{path}: neither hvd's nor SLidR's/HVDistill's MinkUNet (no {HVD_MODULES[0]}/stem. or {slidr.SLIDR_MARK} tensor; "
            f"first names: {', '.join(list(state)[:3])}): give an hvd or SLidR/HVDistill pretraining checkpoint or a state dict of one of their networks"
        )
    out = {key if key.startswith(HVD_MODULES[:4]) else f"backbone.{key}": value for key, value in state.items()}
    model = config.get("model") if isinstance(config, dict) else None
    width = model.get("student_width") if kind == "hvd-pretrain" and isinstance(model, dict) else None
    recorded = model.get("input") if kind == "hvd-pretrain" and isinstance(model, dict) else None
    return Pretrained(path=path, kind=kind, state=out, width=width, input=recorded if isinstance(recorded, dict) else None)


def pretrained_state(path: Path) -> dict[str, torch.Tensor]:
    """The weights of a pretrained-weights file, keyed as in ``SegmentationNet`` (``read_pretrained``)."""
    return read_pretrained(path).state


def pretrained_width(path: Path) -> float | None:
    """The student width an ``hvd train pretrain`` checkpoint was trained with (None for any other
    file, or a checkpoint from before widths were recorded). An unreadable or refused file is an error."""
    return read_pretrained(path).width


def load_pretrained(net: nn.Module, path: Path | Pretrained) -> LoadReport:
    """Copy every checkpoint tensor whose name and shape match a tensor of ``net``; report the rest."""
    pretrained = path if isinstance(path, Pretrained) else read_pretrained(path)
    state = pretrained.state
    own = net.state_dict()
    report = LoadReport(source=str(pretrained.path))
    update = {}
    for key, value in own.items():
        if key not in state:
            report.missing.append(key)
        elif tuple(state[key].shape) != tuple(value.shape):
            report.mismatched.append(key)
        else:
            update[key] = state[key]
            report.loaded.append(key)
    report.unused = [k for k in state if k not in own]
    net.load_state_dict(update, strict=False)
    return report
