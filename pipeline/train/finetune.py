"""``hvd train finetune``: the downstream protocol of docs/METHOD.md section 8 -- the MinkUNet34C
backbone (pretrained weights loaded by name and shape, or from scratch) with a new 1x1 head, trained
on a fraction of the labelled scenes with cross-entropy + Lovasz-softmax, by fine-tuning everything
or by linear probing (backbone frozen).

Runs alone or under ``torchrun`` like pretraining; checkpoints hold the model, optimiser, scheduler,
position in the data, random states, the config and what was loaded, so ``--resume`` continues
exactly where a run stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from models.lovasz import lovasz_softmax
from models.segmentation import Pretrained, SegmentationNet, load_pretrained, read_pretrained
from models.student import sparse_input
from pipeline.errors import HvdError
from pipeline.train import finetune_config
from pipeline.train.downstream import n_classes, open_split
from pipeline.train.finetune_config import FinetuneConfig
from pipeline.train.loop import Loop, rank_world, setup_distributed
from pipeline.train.seg_data import seg_collate
from pipeline.train.voxelize import InputSettings

IGNORE = -100


def targets(labels: torch.Tensor) -> torch.Tensor:
    """Class labels 1..C (16 for nuScenes, 19 for SemanticKITTI) -> logit indices 0..C-1; the ignore
    label 0 -> ``IGNORE``."""
    return torch.where(labels > 0, labels - 1, torch.full_like(labels, IGNORE))


def segmentation_loss(point_logits: torch.Tensor, labels: torch.Tensor, lovasz: bool = True) -> dict[str, torch.Tensor]:
    """Cross-entropy (+ Lovasz-softmax) over the labelled points, in float32."""
    logits, target = point_logits.float(), targets(labels)
    parts = {"ce": F.cross_entropy(logits, target, ignore_index=IGNORE)}
    if lovasz:
        parts["lovasz"] = lovasz_softmax(logits.softmax(dim=1), target, ignore_index=IGNORE)
    return parts


def resolve(config: FinetuneConfig) -> FinetuneConfig:
    """The config with ``model.width`` and ``model.input`` set from the pretrained weights (the file is
    read once here): what the run saves, so its checkpoints say how to rebuild and feed the model."""
    pretrained = read_pretrained(Path(config.model.pretrained)) if config.model.pretrained else None
    return resolve_input(resolve_width(config, pretrained), pretrained)


def resolve_width(config: FinetuneConfig, pretrained: Pretrained | None) -> FinetuneConfig:
    """The config with ``model.width`` set: as given, else the pretraining run's student width (an
    ``hvd train pretrain`` checkpoint records it), else 1.0."""
    if config.model.width is not None:
        return config
    width = pretrained.width if pretrained is not None else None
    return config.model_copy(update={"model": config.model.model_copy(update={"width": width or 1.0})})


def recorded_input(pretrained: Pretrained | None) -> InputSettings | None:
    """The input convention the pretrained weights were trained with, or None when the file does not
    say. An hvd pretraining checkpoint from before conventions were recorded was trained with hvd's
    default, the only one hvd had then."""
    if pretrained is None:
        return None
    if pretrained.input is None:
        return InputSettings() if pretrained.kind == "hvd-pretrain" else None
    try:
        return InputSettings.model_validate(pretrained.input)
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise HvdError(f"{pretrained.path}: its recorded input convention {pretrained.input!r} is not valid model.input settings ({'.'.join(map(str, problem['loc']))}: {problem['msg']})") from None


def resolve_input(config: FinetuneConfig, pretrained: Pretrained | None) -> FinetuneConfig:
    """The config with ``model.input`` set: as given, else the convention the pretrained weights
    record, else hvd's default. Weights fed voxels or intensities of another kind than they were
    trained on fine-tune as from a poor initialisation without any error, so a ``model.input`` that
    contradicts the weights' record is refused."""
    given, recorded = config.model.input, recorded_input(pretrained)
    if given is not None and recorded is not None and given != recorded:
        differ = [f"model.input.{key} is {value:g}" if isinstance(value, float) else f"model.input.{key} is {value}" for key, value in given if getattr(recorded, key) != value]
        raise HvdError(
            f"{' and '.join(differ)} but {pretrained.path} was trained with {recorded.describe()}: "
            "drop model.input to use the checkpoint's convention, or fine-tune weights trained with yours"
        )
    chosen = given or recorded or InputSettings()
    return config.model_copy(update={"model": config.model.model_copy(update={"input": chosen})})


def build_net(config: FinetuneConfig) -> tuple[SegmentationNet, dict | None]:
    """The model, with the pretrained backbone loaded when configured; (net, load report)."""
    net = SegmentationNet(n_classes(config.data.dataset), bn_momentum=config.model.bn_momentum, width=config.model.width or 1.0)
    report = None
    if config.model.pretrained:
        report = load_pretrained(net, Path(config.model.pretrained))
        if not any(k.startswith("backbone.") for k in report.loaded):
            raise HvdError(f"{config.model.pretrained}: no backbone tensor matched by name and shape ({report.summary()})")
        report = report.to_dict() | {"summary": report.summary()}
    return net, report


class FrozenFeatures:
    """Linear probing without augmentation: the frozen backbone (eval mode) gives a keyframe the
    same voxel features in every epoch, so they are computed on first use and kept in memory; later
    epochs run the head only. The result equals recomputing them."""

    def __init__(self, net: SegmentationNet, device: torch.device) -> None:
        self.net, self.device, self.cache = net, device, {}

    def __call__(self, batch: dict) -> torch.Tensor:
        """(M, 96) backbone features of the batch's voxels, example after example."""
        if any(token not in self.cache for token in batch["tokens"]):
            with torch.no_grad():
                x = sparse_input(batch["coords"], [f.to(self.device) for f in batch["feats"]])
                features = self.net.backbone(x).F.cpu()
            for token, part in zip(batch["tokens"], torch.split(features, [len(c) for c in batch["coords"]])):
                self.cache[token] = part
        return torch.cat([self.cache[token] for token in batch["tokens"]]).to(self.device)


def _optimiser(net: SegmentationNet, config: FinetuneConfig) -> torch.optim.Optimizer:
    o = config.optim
    head_lr = o.head_lr or o.lr
    groups = [{"params": list(net.head.parameters()), "lr": head_lr}]
    if config.model.mode == "finetune":
        groups.insert(0, {"params": list(net.backbone.parameters()), "lr": o.lr})
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, dampening=o.dampening, weight_decay=o.weight_decay)


def train(
    config: FinetuneConfig,
    *,
    catalog,
    resume: bool = False,
    on_step: Callable[[int, int, dict], None] | None = None,
    on_loaded: Callable[[dict | None, FinetuneConfig], None] | None = None,
) -> dict:
    """Train; return {"steps", "first", "last", "out_dir", "load_report", "scenes", "examples"}."""
    device = setup_distributed()
    rank, world = rank_world()
    config = resolve(config)
    data = open_split(catalog, config.data, "train", label_fraction=config.data.label_fraction, max_examples=config.data.max_examples, augment=config.data.augment, seed=config.run.seed, input=config.model.input)
    dataset, scenes = data.dataset, data.scenes

    torch.manual_seed(config.run.seed)
    net, report = build_net(config)
    linear = config.model.mode == "linear"
    if linear:
        net.backbone.requires_grad_(False)
    net = net.to(device)
    if world > 1 and device.type == "cuda" and not linear:
        from models.minkowski import ME

        net = ME.MinkowskiSyncBatchNorm.convert_sync_batchnorm(net)
    model = nn.parallel.DistributedDataParallel(net) if world > 1 else net
    optimiser = _optimiser(net, config)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.optim.epochs)
    groups = {"head": list(net.head.parameters())} | ({} if linear else {"backbone": list(net.backbone.parameters())})
    loop = Loop(config, net=net, model=model, optimiser=optimiser, scheduler=scheduler, device=device, n_examples=len(dataset), tag="finetune", groups=groups)
    if loop.batches_per_epoch == 0:
        raise HvdError(f"{len(dataset)} training keyframes ({len(scenes)} scenes) is less than one batch of {config.data.batch_size} per process")

    state = loop.resume() if resume else None
    if state is not None:
        net.load_state_dict(state["model"])
        report = state["load_report"]
    elif rank == 0:
        finetune_config.save(config, loop.run_dir / "config.yaml")
    if on_loaded and rank == 0:
        on_loaded(report, config)  # the config resolved: width and input convention

    cached = None
    if linear and config.model.cache_frozen_features:
        if config.data.augment or world > 1:
            raise HvdError("model.cache_frozen_features needs data.augment: false and a single process (the features must not change between epochs)")
        cached = FrozenFeatures(net, device)

    def compute(batch: dict, generator: torch.Generator):
        if cached is not None:
            logits = net.head_logits(cached(batch))
        else:
            logits = model(sparse_input(batch["coords"], [f.to(device) for f in batch["feats"]]), frozen_backbone=linear)
        parts = segmentation_loss(logits[batch["inverse"].to(device)], batch["labels"].to(device), config.optim.lovasz)
        return parts, sum(parts.values())

    def frozen_backbone_in_eval_mode() -> None:
        net.backbone.eval()  # frozen: BatchNorm keeps the pretrained statistics

    result = loop.run(
        dataset,
        seg_collate,
        compute,
        weights=lambda: {"model": net.state_dict()},
        extra={"load_report": report},
        before_epoch=frozen_backbone_in_eval_mode if linear else None,
        on_step=on_step,
    )
    result.update({"load_report": None if report is None else report["summary"], "scenes": scenes, "split_source": data.split_source, "examples": len(dataset), "unit": data.unit, "group": data.group})
    return loop.summary(result)
