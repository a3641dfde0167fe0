"""The typed configuration of ``hvd train pretrain``: loaded from YAML (unknown keys are errors),
overridden by a few CLI options, saved next to every run and inside every checkpoint."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, create_model, field_validator, model_validator

from models.losses import LossConfig
from pipeline.store.config_file import build_config, save_config
from pipeline.train.pretrain_data import DataConfig
from pipeline.train.voxelize import InputSettings


class _Config(BaseModel):
    """Unknown keys are errors, and no number may be infinite or NaN (a NaN learning rate would
    train to NaN weights without a word)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# The bounds of the loss settings (``LossConfig`` itself is a plain dataclass): weights may switch a
# loss off (0) but not reverse it, the temperature divides the logits, and sampling needs a sample.
LOSS_BOUNDS = {
    "ipv_weight": {"ge": 0},
    "bev_weight": {"ge": 0},
    "depth_weight": {"ge": 0},
    "ppkt_weight": {"ge": 0},
    "temperature": {"gt": 0},
    "bev_matches": {"ge": 1},
    "ppkt_pairs": {"ge": 1},
}


class _LossBase(_Config):
    @model_validator(mode="after")
    def _one_loss_on(self):
        if not any(getattr(self, name) for name in ("ipv", "bev", "depth", "ppkt")):
            raise ValueError("no loss is switched on: enable at least one of ipv, bev, depth, ppkt")
        return self


# Which losses train and their weights (docs/METHOD.md section 6): the fields of
# ``models.losses.LossConfig``, as a validated config section. IPV only is SLidR, PPKT only is PPKT,
# IPV + BEV + depth is HVDistill.
LossSettings = create_model(
    "LossSettings",
    __base__=_LossBase,
    **{f.name: (get_type_hints(LossConfig)[f.name], Field(f.default, **LOSS_BOUNDS.get(f.name, {}))) for f in fields(LossConfig)},
)


class NetworkConfig(_Config):
    """The widths of the student and the teacher heads (docs/METHOD.md section 5) and the student's
    input convention (section 4). The defaults are the published networks and HVDistill's input;
    the CPU transfer experiment narrows the widths for every method alike."""

    student_width: float = Field(1.0, gt=0, description="scales every width of MinkUNet34C (1.0: as published)")
    bridge_channels: int | None = Field(None, ge=1, description="the bridge's output = the depth net's input channels; null: the teacher encoder's (2048 for ResNet-50), as in the reference")
    depth_channels: int = Field(256, ge=1, description="the depth net's inner width (BEVDepth's 256)")
    input: InputSettings = Field(InputSettings(), description="voxelisation and intensity scale of the student's input, recorded in every checkpoint for fine-tuning")


class OptimConfig(_Config):
    """SGD with a cosine schedule stepped per epoch (docs/METHOD.md section 7)."""

    lr: float = Field(0.5, ge=0, description="0 keeps the weights at the initialisation while BatchNorm statistics adapt (bench/transfer.py's random+BN diagnostic)")
    momentum: float = Field(0.9, ge=0, lt=1)
    dampening: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(1e-4, ge=0)
    epochs: int = Field(50, ge=1)
    # The paper clips nothing. When a run asks for clipping, each parameter group (student backbone,
    # student heads, decoder, bridge, depth net) is clipped on its own by default: a global clip lets
    # the group with the largest gradient throttle all the others.
    clip_grad_norm: float | None = Field(None, gt=0, description="clip gradient norms at this value (not in the paper; off by default)")
    clip_scope: Literal["group", "global"] = Field("group", description="group: each parameter group on its own; global: all parameters as one vector")


class RunConfig(_Config):
    out_dir: str = "runs/pretrain"
    seed: int = Field(0, ge=0)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimiser steps (demo, tests)")
    checkpoint_every: int = Field(200, ge=1)
    log_every: int = Field(1, ge=1)
    image_every: int = Field(100, ge=0, description="every N steps, TensorBoard images of the batch's first example: teacher vs student BEV features, predicted vs target depth (one extra forward pass in evaluation mode); 0: none")
    amp: bool = Field(False, description="mixed precision on a GPU (bfloat16 where supported, else float16 with gradient scaling; the depth loss stays float32); off: fp32 as in the paper; ignored on the CPU")


class PretrainConfig(_Config):
    data: DataConfig = DataConfig()
    model: NetworkConfig = NetworkConfig()
    losses: LossSettings = Field(LossSettings(), validate_default=True)  # validated against model.input even when not given
    optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()

    @field_validator("losses")
    @classmethod
    def _bev_needs_cartesian_voxels(cls, losses, info: ValidationInfo):
        """The BEV head reads each voxel's BEV cell off its coordinates as x and y in 0.1 m units
        (models/frustum.py voxel_bev_cell, models/student.py collapse_z), where the teacher's BEV grid
        puts it: cylindrical coordinates (rho, phi) or another cell size would pair student columns
        with the wrong teacher cells. IPV, depth and PPKT read features through the inverse map only
        and work with either convention. (A check of ``losses`` against ``model``, validated before it.)"""
        from models.frustum import VOXEL_SIZE_M

        model = info.data.get("model")
        if model is None or not losses.bev:
            return losses
        given = model.input
        if given.voxelization != "cartesian":
            raise ValueError(
                f"model.input.voxelization is {given.voxelization} but the BEV loss is on: the BEV head needs Cartesian x, y voxels; "
                "set losses.bev: false (IPV + depth is SLidR-style) or model.input.voxelization: cartesian"
            )
        if given.voxel_size_m != VOXEL_SIZE_M:
            raise ValueError(
                f"model.input.voxel_size_m is {given.voxel_size_m:g} but the BEV loss is on: the BEV head maps voxels to its 0.4 m cells "
                f"as {VOXEL_SIZE_M:g} m voxels; set losses.bev: false or model.input.voxel_size_m: {VOXEL_SIZE_M:g}"
            )
        return losses


PRESETS: dict[str, dict] = {
    # the synthetic demo: a few minutes on a laptop CPU (lr scaled down with the batch of 2; no clipping)
    "demo": {
        "data": {"source": "synth-demo", "batch_size": 2, "num_workers": 1},
        "optim": {"lr": 0.1, "epochs": 2},
        "run": {"out_dir": "runs/pretrain-demo", "max_steps": 20, "checkpoint_every": 10, "image_every": 10},
    },
    # the paper's setting: 4 GPUs x 4 examples, 50 epochs
    "nuscenes": {
        "data": {"source": "nuscenes", "batch_size": 4, "num_workers": 6},
        "optim": {"lr": 0.5, "epochs": 50},
        "run": {"out_dir": "runs/pretrain-nuscenes", "checkpoint_every": 1000, "log_every": 20},
    },
}


def build(preset: str | None = None, path: Path | None = None, overrides: dict | None = None) -> PretrainConfig:
    """preset, then the YAML file, then CLI overrides (each level replaces what it names)."""
    return build_config(PretrainConfig, PRESETS, preset, path, overrides)


def save(config: PretrainConfig, path: Path) -> None:
    save_config(config, path)
