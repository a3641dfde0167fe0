"""Loading checkpoints into the teacher encoder -- self-supervised ResNet-50 checkpoints into
``models.resnet.ResNet50``, whatever format their publisher saved them in, and torchvision's
ImageNet MobileNetV2 into ``models.mobilenet.MobileNetV2``. Nothing is downloaded: the user gives a
file (``scripts/fetch_teacher_weights.sh`` fetches the MobileNetV2 one).

Detected formats (in this order):

- ``moco``: MoCo v1/v2 -- ``{"state_dict": {"module.encoder_q.*", "module.encoder_k.*", "module.queue", ...}}``;
  the query encoder is kept, its ``fc`` (v1: linear, v2: MLP) dropped;
- ``swav``: SwAV / DeepCluster-v2 -- ``module.``-prefixed keys with ``projection_head.*`` and
  ``prototypes*`` heads, which are dropped;
- ``dino-full``: a DINO training checkpoint -- ``{"teacher": {"backbone.*", "head.*"}}``;
- ``torchvision-mobilenet_v2``: torchvision's MobileNetV2 -- ``features.*`` and a ``classifier.*``
  head, which is dropped;
- ``torchvision``: a plain torchvision state dict (``fc`` dropped), also DINO's released ResNet-50
  (no ``fc``) and any plain or ``model``-wrapped state dict.

A checkpoint whose key names say it is for the other architecture (MobileNetV2 weights for a
ResNet-50 encoder, or the reverse) is an error that says which encoder to choose.

Keys that are neither a known head nor a parameter of the model, and parameters the checkpoint
lacks, are an error that lists them, unless ``allow_mismatch`` is set. BatchNorm's
``num_batches_tracked`` counters are not required (older torchvision files lack them; a frozen
teacher never reads them).

Every checkpoint hvd reads -- these teacher files, a pretraining run given to fine-tuning, a run's own
``checkpoint.pt`` on resume or ``hvd eval`` -- goes through ``load_checkpoint``: ``torch.load`` with
``weights_only=True``, so a file can hold tensors, numbers, strings, lists and dicts but never make
Python call a function while it is read (a pickle can otherwise run any code). hvd's own checkpoints
hold nothing else (``pipeline.train.loop`` stores the numpy random state as a tensor); only the numpy
arrays of the random states written by earlier versions are allowed besides.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.errors import HvdError

HEADS = ("fc.", "projection_head.", "prototypes", "head.")
MOBILENET_HEADS = ("classifier.",)
ARCHITECTURES = {"resnet50": "ResNet-50", "mobilenet_v2": "MobileNetV2"}  # ``arch`` of the encoder classes


class CheckpointError(HvdError):
    """A checkpoint cannot be read, is refused, or does not fit the model (the message names the file)."""


# The numpy random state of checkpoints written before the state was stored as a tensor: a uint32
# array, rebuilt from these (they construct arrays and dtypes, nothing else). numpy pickles arrays
# through its ``_reconstruct``, named ``numpy.core.multiarray._reconstruct`` by numpy 1 and
# ``numpy._core.multiarray._reconstruct`` by numpy 2: allow both names, so that a checkpoint loads
# under either numpy (a CPU run's on a GPU machine's numpy 2). The function itself is taken from
# an array's pickle recipe (``np.core`` is deprecated in numpy 2, ``np._core`` absent in numpy 1).
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_LEGACY_NUMPY = [
    (_RECONSTRUCT, "numpy.core.multiarray._reconstruct"),
    (_RECONSTRUCT, "numpy._core.multiarray._reconstruct"),
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),
]


def load_checkpoint(path: str | Path) -> object:
    """The contents of a ``torch.save`` file, read as data only (``weights_only=True``). A file that
    would construct other Python objects is refused, and an unreadable one reported, as a
    ``CheckpointError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        with torch.serialization.safe_globals(_LEGACY_NUMPY), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # a plain pickle: refused below
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for refused, corrupt or foreign files
        raise CheckpointError(_load_failure(path, exc)) from None


def _load_failure(path: Path, exc: Exception) -> str:
    """Why ``path`` could not be loaded, in one line."""
    text = str(exc)
    head = path.read_bytes()[:12] if path.stat().st_size else b""
    first = text.strip().splitlines()[0].split(". ")[0] if text.strip() else type(exc).__name__
    if not head:
        return f"{path}: not a loadable PyTorch checkpoint (the file is empty)"
    if not head.startswith((b"PK", b"\x80")):  # torch.save writes a zip archive (a pickle before torch 1.6)
        return f"{path}: not a loadable PyTorch checkpoint (not a torch.save file; it starts with {head!r})"
    if "Weights only load failed" in text:
        names = _unsafe_globals(path, text)
        if names:
            return (
                f"{path}: refused to load: it holds Python objects other than tensors ({', '.join(names)}); hvd only loads weights "
                "(tensors, numbers, strings, lists, dicts): re-save the state dict alone, from code you trust"
            )
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        return f"{path}: refused to load: it is not a plain weights pickle ({detail.group(1).strip() if detail else first}); hvd only loads weights saved with torch.save"
    if head.startswith(b"PK"):
        return f"{path}: not a loadable PyTorch checkpoint (a zip archive, truncated, corrupt or not written by torch.save: {first})"
    return f"{path}: not a loadable PyTorch checkpoint (a pickle, truncated or corrupt: {type(exc).__name__} {first})"


def _unsafe_globals(path: Path, message: str) -> list[str]:
    """The Python names a refused file would have imported (all of them where torch can list them)."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - not a zip archive: fall back on the one torch named
        names = []
    return sorted(names) or re.findall(r"GLOBAL (\S+) was not an allowed global", message)


@dataclass
class LoadReport:
    path: str
    format: str
    loaded: int
    dropped_heads: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        heads = sorted({k.split(".")[0] for k in self.dropped_heads})
        text = f"{self.path}: {self.format} checkpoint, {self.loaded} tensors loaded"
        if heads:
            text += f", heads dropped: {', '.join(heads)}"
        if self.missing or self.unexpected:
            text += f"; {len(self.missing)} missing and {len(self.unexpected)} unexpected keys allowed"
        return text


def _unwrap(checkpoint: dict) -> tuple[dict, str]:
    """(state dict, container) from the usual wrappings."""
    for key in ("state_dict", "model"):
        if isinstance(checkpoint.get(key), dict):
            return checkpoint[key], key
    if isinstance(checkpoint.get("teacher"), dict):
        return checkpoint["teacher"], "teacher"
    return checkpoint, ""


def _strip(state: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def architecture(keys) -> str | None:
    """The encoder a state dict with these key names is for (an ``ARCHITECTURES`` key), or None."""
    keys = list(keys)
    if any(k.startswith("features.") for k in keys) and not any(k.startswith("layer") for k in keys):
        return "mobilenet_v2"
    if any(k.startswith(("layer1.", "layer4.")) for k in keys):
        return "resnet50"
    return None


def normalise(checkpoint: dict) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """(backbone state dict with torchvision names, detected format, dropped head keys)."""
    state, container = _unwrap(checkpoint)
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    keys = list(state)
    if any(k.startswith("module.encoder_q.") for k in keys) or any(k.startswith("encoder_q.") for k in keys):
        fmt = "moco"
        state = _strip(state, "module.encoder_q." if any(k.startswith("module.") for k in keys) else "encoder_q.")
    elif container == "teacher" or all(k.startswith(("backbone.", "head.")) for k in keys):
        fmt = "dino-full"
        heads = [k for k in keys if k.startswith("head.")]
        return _strip(state, "backbone."), fmt, heads
    elif keys and all(k.startswith("module.") for k in keys):
        state = _strip(state, "module.")
        fmt = "swav" if any(k.startswith(("projection_head.", "prototypes")) for k in state) else "torchvision (module.)"
    else:
        fmt = "torchvision" if container != "model" else "torchvision (model)"
    drop = HEADS
    if architecture(state) == "mobilenet_v2":
        fmt, drop = fmt.replace("torchvision", "torchvision-mobilenet_v2"), HEADS + MOBILENET_HEADS
    heads = [k for k in state if k.startswith(drop)]
    return {k: v for k, v in state.items() if not k.startswith(drop)}, fmt, heads


def load_encoder_weights(model: nn.Module, path: str | Path, *, allow_mismatch: bool = False) -> LoadReport:
    """Load a checkpoint file into ``model`` (in place) and say what was loaded."""
    path = Path(path)
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: expected a state dict or a dict holding one, found {type(checkpoint).__name__}")
    state, fmt, heads = normalise(checkpoint)
    found, wanted = architecture(state), getattr(model, "arch", None)
    if found and wanted and found != wanted:
        raise CheckpointError(
            f"{path} holds {ARCHITECTURES[found]} weights ({fmt} format) but the teacher encoder is a "
            f"{ARCHITECTURES[wanted]}: choose `encoder: {found}` (teacher_cache params) for this file, "
            f"or give a {ARCHITECTURES[wanted]} checkpoint"
        )
    expected = model.state_dict()
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if shapes:
        raise CheckpointError(f"{path}: shape mismatch for {', '.join(f'{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}' for k in shapes[:10])}")
    if (missing or unexpected) and not allow_mismatch:
        raise CheckpointError(
            f"{path} ({fmt} format) does not match a {ARCHITECTURES.get(wanted, type(model).__name__)}: "
            + (f"missing keys: {', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}; " if missing else "")
            + (f"unexpected keys: {', '.join(unexpected[:20])}{' ...' if len(unexpected) > 20 else ''}; " if unexpected else "")
            + "pass allow_mismatch (--allow-mismatch) to load it anyway"
        )
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    return LoadReport(str(path), fmt, len(set(state) & set(expected)), heads, missing, unexpected)
