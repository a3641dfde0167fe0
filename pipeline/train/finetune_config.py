"""The typed configuration of ``hvd train finetune``: loaded from YAML (unknown keys are errors),
overridden by a few CLI options, saved next to every run and inside every checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.store.config_file import build_config, save_config
from pipeline.train.pretrain_config import RunConfig
from pipeline.train.seg_data import SegDataConfig
from pipeline.train.voxelize import InputSettings


class _Config(BaseModel):
    """Unknown keys are errors, and no number may be infinite or NaN."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelSettings(_Config):
    """``pretrained``: an ``hvd train pretrain`` checkpoint (or a backbone state dict) loaded by name
    and shape; none trains from scratch. ``linear``: the backbone is frozen (eval mode, no
    gradients) and only the head trains -- linear probing. ``input``: the voxelisation and intensity
    scale the backbone is fed, which must be the ones its weights were trained with; a run's saved
    config and checkpoints always hold the resolved value."""

    pretrained: str | None = None
    mode: Literal["finetune", "linear"] = "finetune"
    cache_frozen_features: bool = Field(False, description="linear probing without augmentation: keep each keyframe's frozen backbone features in memory after their first use (small datasets)")
    bn_momentum: float = Field(0.05, gt=0, le=1, description="BatchNorm running-statistics momentum (docs/METHOD.md: 0.05; larger for runs of a few dozen steps)")
    width: float | None = Field(None, gt=0, description="the backbone's width multiplier; null: the pretraining run's (model.student_width), or 1.0 (MinkUNet34C as published)")
    input: InputSettings | None = Field(None, description="the student's input convention; null: the one the pretrained weights record, else hvd's (cartesian 0.1 m, intensity / 255)")


class FinetuneOptim(_Config):
    """SGD, cosine schedule stepped per epoch; the head has its own learning rate (docs/METHOD.md
    section 8)."""

    lr: float = Field(0.02, gt=0)
    head_lr: float | None = Field(2.0, gt=0, description="learning rate of the new head (null: lr)")
    momentum: float = Field(0.9, ge=0, lt=1)
    dampening: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(1e-4, ge=0)
    epochs: int = Field(100, ge=1)
    lovasz: bool = True  # cross-entropy + Lovasz-softmax; false: cross-entropy only


class FinetuneRun(RunConfig):
    """As pretraining's: run folder, seed, step limit, checkpoint and log intervals, autocast on a GPU."""

    out_dir: str = "runs/finetune"


class FinetuneConfig(_Config):
    data: SegDataConfig = SegDataConfig()
    model: ModelSettings = ModelSettings()
    optim: FinetuneOptim = FinetuneOptim()
    run: FinetuneRun = FinetuneRun()


PRESETS: dict[str, dict] = {
    # the paper's few-label fine-tuning: 1 % of the scenes, batch 16, lr 0.02, head lr 2.0, 100 epochs
    "nuscenes-1pct": {
        "data": {"source": "nuscenes", "label_fraction": 0.01, "batch_size": 16, "num_workers": 6},
        "run": {"out_dir": "runs/finetune-nuscenes-1pct", "checkpoint_every": 500, "log_every": 10},
    },
    # linear probing: backbone frozen, every scene, lr 0.05
    "nuscenes-linear": {
        "data": {"source": "nuscenes", "label_fraction": 1.0, "batch_size": 16, "num_workers": 6},
        "model": {"mode": "linear"},
        "optim": {"lr": 0.05, "head_lr": 0.05, "epochs": 50},
        "run": {"out_dir": "runs/linear-nuscenes", "checkpoint_every": 1000, "log_every": 20},
    },
    # the synthetic demo: minutes on a laptop CPU (lr and head lr scaled down with the batch of 2)
    "demo": {
        "data": {"source": "synth-demo", "label_fraction": 0.5, "batch_size": 2, "num_workers": 1},
        "optim": {"lr": 0.02, "head_lr": 0.2, "epochs": 4},
        "run": {"out_dir": "runs/finetune-demo", "max_steps": 20, "checkpoint_every": 10},
    },
    # SemanticKITTI, 1 % of the training frames (every 100th): SLidR's semseg_kitti settings (batch 10,
    # lr 0.05 for backbone and head, BatchNorm momentum 0.02, 25 epochs)
    "semantickitti-1pct": {
        "data": {"dataset": "semantickitti", "source": "semantickitti", "label_fraction": 0.01, "batch_size": 10, "num_workers": 6},
        "model": {"bn_momentum": 0.02},
        "optim": {"lr": 0.05, "head_lr": None, "epochs": 25},
        "run": {"out_dir": "runs/finetune-semantickitti-1pct", "checkpoint_every": 500, "log_every": 10},
    },
    # the synthetic world in SemanticKITTI's format (hvd data synth --format semantickitti --preset demo)
    "demo-semantickitti": {
        "data": {"dataset": "semantickitti", "source": "synth-kitti-demo", "label_fraction": 0.5, "batch_size": 2, "num_workers": 1},
        "optim": {"lr": 0.02, "head_lr": 0.2, "epochs": 4},
        "run": {"out_dir": "runs/finetune-demo-semantickitti", "max_steps": 20, "checkpoint_every": 10},
    },
    "demo-linear": {
        "data": {"source": "synth-demo", "label_fraction": 1.0, "batch_size": 2, "num_workers": 1},
        "model": {"mode": "linear"},
        "optim": {"lr": 0.05, "head_lr": 0.05, "epochs": 2},
        "run": {"out_dir": "runs/linear-demo", "max_steps": 20, "checkpoint_every": 10},
    },
}


def build(preset: str | None = None, path: Path | None = None, overrides: dict | None = None) -> FinetuneConfig:
    """preset, then the YAML file, then CLI overrides (each level replaces what it names)."""
    return build_config(FinetuneConfig, PRESETS, preset, path, overrides)


def save(config: FinetuneConfig, path: Path) -> None:
    save_config(config, path)
