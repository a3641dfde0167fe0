"""Checkpoints of SLidR and HVDistill <-> hvd's student: an explicit name map between their
MinkUNet34C (``Res16UNet34C``) and ours.

Both publish the same backbone as hvd (docs/METHOD.md section 5) under other module names, with
MinkowskiEngine layers, so every tensor has the same shape on both sides and only the names differ.
The map is written out from the published architecture (layers (2,3,4,6,2,2,2,2), planes
(32,64,128,256,256,128,96,96), init dim 32), never by pairing tensors in order: a file whose
modules are named otherwise loads nothing rather than something wrong.

SLidR's names (``model/res16unet.py``, ``model/modules/resnet_block.py``) -> hvd's:

==============================  ====================================  =================
SLidR / HVDistill               hvd (``Student``)                     tensors
==============================  ====================================  =================
conv0p1s1, bn0                  backbone.stem.0, backbone.stem.1      3^3 conv, BN
conv{i}p{2^(i-1)}s2, bn{i}      backbone.down.{i-1}.0.0, .0.1         2^3 stride-2 conv, BN
block{i}.{j}                    backbone.down.{i-1}.1.{j}             BasicBlock (i = 1..4)
convtr{i}p{2^(8-i)}s2, bntr{i}  backbone.up.{i-4}.up.0, .up.1         transposed conv, BN (i = 4..7)
block{i}.{j}                    backbone.up.{i-5}.blocks.{j}          BasicBlock (i = 5..8)
final (SLidR)                   final_1                               1x1 conv 96 -> 64 + bias
final_1 (HVDistill)             final_1                               1x1 conv 96 -> 64 + bias
final_2.{0,1,2,3,4} (HVDistill) bev_head.0.0, .0.1, .1.0, .1.1, .2    conv, BN, conv, BN, conv
==============================  ====================================  =================

Inside a BasicBlock: conv1, norm1, conv2, norm2, downsample.{0,1} <-> conv1, bn1, conv2, bn2,
downsample.{0,1}. A convolution holds ``kernel`` (and ``bias``); a MinkowskiBatchNorm ``bn.weight``,
``bn.bias``, ``bn.running_mean``, ``bn.running_var``, ``bn.num_batches_tracked``.

HVDistill's ``final_2`` convolutions carry biases and have no ReLUs between them; hvd's BEV head
has ReLUs and no biases: its kernels and BNs are mapped, the three biases stay unused. (Fine-tuning
needs the backbone only: both heads are unused there.)
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from models.student import INIT_DIM, LAYERS, PLANES, StudentConfig

CONV = ("kernel",)
CONV_BIAS = ("kernel", "bias")
BN = tuple(f"bn.{name}" for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"))
PREFIXES = ("module.", "model.")  # DDP's wrapper; SLidR's downstream (lightning) module holds the net as ``model``

# A SLidR or HVDistill MinkUNet state dict has these; hvd's never does.
SLIDR_MARK = "conv0p1s1.kernel"
HVDISTILL_HEADS = ("final_1.", "final_2.")


def _block(slidr: str, hvd: str, *, downsample: bool) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """(SLidR module, hvd module, tensor suffixes) of one BasicBlock."""
    yield f"{slidr}.conv1", f"{hvd}.conv1", CONV
    yield f"{slidr}.norm1", f"{hvd}.bn1", BN
    yield f"{slidr}.conv2", f"{hvd}.conv2", CONV
    yield f"{slidr}.norm2", f"{hvd}.bn2", BN
    if downsample:
        yield f"{slidr}.downsample.0", f"{hvd}.downsample.0", CONV
        yield f"{slidr}.downsample.1", f"{hvd}.downsample.1", BN


def _blocks(slidr: str, hvd: str, c_in: int, c_out: int, n: int) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """The BasicBlocks of one stage: only the first can change the width (and so has a downsample)."""
    for j in range(n):
        yield from _block(f"{slidr}.{j}", f"{hvd}.{j}", downsample=j == 0 and c_in != c_out)


def backbone_modules() -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """(SLidR module, hvd module under ``backbone.``, tensor suffixes) of every module of MinkUNet34C,
    in SLidR's forward order."""
    yield "conv0p1s1", "stem.0", CONV
    yield "bn0", "stem.1", BN
    widths = (INIT_DIM, *PLANES[:4])  # encoder output widths at strides 1, 2, 4, 8, 16
    for i in range(1, 5):  # encoder stage i: tensor stride 2^(i-1) -> 2^i
        yield f"conv{i}p{2 ** (i - 1)}s2", f"down.{i - 1}.0.0", CONV
        yield f"bn{i}", f"down.{i - 1}.0.1", BN
        yield from _blocks(f"block{i}", f"down.{i - 1}.1", widths[i - 1], widths[i], LAYERS[i - 1])
    c_in = widths[4]
    for i in range(4, 8):  # decoder: tensor stride 2^(8-i) -> 2^(7-i), then block{i+1} on the concatenation
        c_out, c_skip = PLANES[i], widths[7 - i]
        yield f"convtr{i}p{2 ** (8 - i)}s2", f"up.{i - 4}.up.0", CONV
        yield f"bntr{i}", f"up.{i - 4}.up.1", BN
        yield from _blocks(f"block{i + 1}", f"up.{i - 4}.blocks", c_out + c_skip, c_out, LAYERS[i])
        c_in = c_out
    assert c_in == PLANES[-1]


def head_modules(kind: str) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """(their module, hvd's module, tensor suffixes mapped) of the pretraining heads: SLidR's ``final``
    or HVDistill's ``final_1`` -> ``final_1``; HVDistill's ``final_2`` -> ``bev_head`` without its
    biases (hvd's BEV head has none)."""
    if kind == "slidr":
        yield "final", "final_1", CONV_BIAS
        return
    yield "final_1", "final_1", CONV_BIAS
    yield "final_2.0", "bev_head.0.0", CONV
    yield "final_2.1", "bev_head.0.1", BN
    yield "final_2.2", "bev_head.1.0", CONV
    yield "final_2.3", "bev_head.1.1", BN
    yield "final_2.4", "bev_head.2", CONV


def name_map(kind: str = "slidr") -> dict[str, str]:
    """Every mapped tensor: {their name: hvd's name in ``Student`` / ``SegmentationNet``}.
    ``kind``: "slidr" (head ``final``) or "hvdistill" (heads ``final_1``, ``final_2``)."""
    if kind not in ("slidr", "hvdistill"):
        raise ValueError(f"kind must be slidr or hvdistill, got {kind!r}")
    out = {}
    for slidr, hvd, suffixes in backbone_modules():
        out.update({f"{slidr}.{s}": f"backbone.{hvd}.{s}" for s in suffixes})
    for theirs, hvd, suffixes in head_modules(kind):
        out.update({f"{theirs}.{s}": f"{hvd}.{s}" for s in suffixes})
    return out


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Names without the wrappers' prefixes (``module.``, ``model.``, in any nesting)."""
    out = {}
    for key, value in state.items():
        while key.startswith(PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def detect(state: dict[str, torch.Tensor]) -> str | None:
    """"slidr" or "hvdistill" for a state dict named as SLidR's / HVDistill's MinkUNet (prefixes
    stripped), else None. HVDistill's file is told by its heads (``final_1``, ``final_2``)."""
    if SLIDR_MARK not in state:
        return None
    return "hvdistill" if any(key.startswith(HVDISTILL_HEADS) for key in state) else "slidr"


def slidr_to_hvd(state: dict[str, torch.Tensor], kind: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A SLidR / HVDistill state dict (prefixes stripped) -> (tensors under hvd's names, their names
    left unmapped). The unmapped ones (HVDistill's ``final_2`` biases, anything unknown) are not
    renamed: they cannot be anything of hvd's."""
    names = name_map(kind)
    mapped = {names[key]: value for key, value in state.items() if key in names}
    return mapped, [key for key in state if key not in names]


def hvd_to_slidr(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A ``Student`` state dict -> (SLidR's pretraining state dict: backbone + ``final``, the hvd
    names not exported). ``bev_head`` has no place in SLidR's network; every backbone tensor and
    ``final_1`` must be there (a narrowed or foreign network is an error of the caller's to check)."""
    names = name_map("slidr")
    absent = [hvd for hvd in names.values() if hvd not in state]
    if absent:
        raise KeyError(f"{len(absent)} tensors of SLidR's network absent from the state dict, e.g. {', '.join(absent[:3])}")
    exported = set(names.values())
    return {slidr: state[hvd] for slidr, hvd in names.items()}, [key for key in state if key not in exported]


# --- the input convention a file's weights were trained with ----------------------------------------
#
# SLidR voxelises in cylindrical coordinates, HVDistill in cartesian ones (its BEV head needs x, y),
# both at 0.1 m and with the raw LiDAR intensity (0-255 on nuScenes) as the feature; their
# ``config`` says which through ``cylindrical_coordinates`` and ``voxel_size``. A file hvd exported
# also records hvd's intensity scaling as ``intensity_divisor``.

RAW_INTENSITY = 1.0  # SLidR's and HVDistill's feature: the intensity as stored (divided by 1)


def input_convention(config: object, kind: str) -> dict:
    """``model.input`` settings of a SLidR / HVDistill file from its ``config`` (None or not a dict:
    the defaults of the code that writes such a file -- SLidR cylindrical, HVDistill cartesian,
    0.1 m, raw intensity)."""
    config = config if isinstance(config, dict) else {}
    cylindrical = config.get("cylindrical_coordinates", kind == "slidr")
    return {
        "voxelization": "cylindrical" if cylindrical else "cartesian",
        "voxel_size_m": float(config.get("voxel_size", 0.1)),
        "intensity_divisor": float(config.get("intensity_divisor", RAW_INTENSITY)),
    }


def slidr_config(convention: dict, *, source: dict) -> dict:
    """The ``config`` of an exported checkpoint: what SLidR's downstream code reads (and asserts:
    ``voxel_size``, ``cylindrical_coordinates``) for hvd's input settings (``model.input``), plus
    where it came from. ``intensity_divisor`` says how hvd scaled the intensity (SLidR feeds it raw)."""
    return {
        "model_points": "minkunet",
        "model_n_out": StudentConfig.feature_dim,
        "normalize_features": True,  # final_1's output is L2-normalised, like SLidR's with this flag
        "kernel_size": 3,
        "bn_momentum": StudentConfig.bn_momentum,  # pretraining's student always uses the default
        "voxel_size": float(convention.get("voxel_size_m", 0.1)),
        "cylindrical_coordinates": convention.get("voxelization", "cartesian") == "cylindrical",
        "intensity_divisor": float(convention.get("intensity_divisor", 255.0)),
        "hvd": source,
    }


# --- hvd -> SLidR ----------------------------------------------------------------------------------

HVD_INPUT = {"voxelization": "cartesian", "voxel_size_m": 0.1, "intensity_divisor": 255.0}  # before runs recorded it


def to_slidr_checkpoint(checkpoint: object, path: str) -> tuple[dict, list[str]]:
    """An ``hvd train pretrain`` checkpoint (read from ``path``) -> (SLidR's pretraining checkpoint
    layout ``{"model_points", "epoch", "config"}``, the student tensors not exported). Tensors and
    plain data only, so it loads with ``weights_only``. A narrowed student has no SLidR counterpart
    (its widths are fixed): refused."""
    from pipeline.errors import HvdError

    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("student"), dict):
        raise HvdError(f"{path} is not a checkpoint of `hvd train pretrain` (no student weights): give a pretraining run folder or its checkpoint.pt")
    config = checkpoint.get("config") if isinstance(checkpoint.get("config"), dict) else {}
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    width = model.get("student_width", 1.0)
    if width != 1.0:
        raise HvdError(
            f"{path}: the student is narrowed (model.student_width {width}); SLidR's MinkUNet34C has fixed widths: "
            "export a run trained with model.student_width 1.0"
        )
    try:
        state, dropped = hvd_to_slidr(checkpoint["student"])
    except KeyError as exc:
        raise HvdError(f"{path}: the student is not hvd's MinkUNet34C ({exc.args[0]})") from None
    for name, shape in (("conv0p1s1.kernel", (27, 1, INIT_DIM)), ("final.kernel", (PLANES[-1], StudentConfig.feature_dim))):
        if tuple(state[name].shape) != shape:
            raise HvdError(f"{path}: the student's widths are not MinkUNet34C's ({name} {tuple(state[name].shape)}, SLidR's {shape})")
    recorded = model.get("input")
    convention = HVD_INPUT | (recorded if isinstance(recorded, dict) else {})
    source = {"checkpoint": str(path), "kind": "hvd-pretrain", "step": checkpoint.get("step"), "student_width": float(width), "input": convention}
    return {"model_points": state, "epoch": checkpoint.get("epoch"), "config": slidr_config(convention, source=source)}, dropped
