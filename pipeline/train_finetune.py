"""``hvd train finetune``: the downstream protocol of METHOD.md section 8 -- the MinkUNet34C backbone
(pretrained weights loaded by name and shape, or from scratch) with a new 1x1 head, trained on a
fraction of the labelled scenes with cross-entropy + Lovasz-softmax, by fine-tuning everything or by
linear probing (backbone frozen).

Runs alone or under ``torchrun`` like pretraining; checkpoints hold the model, optimiser, scheduler,
position in the data, random states, the config and what was loaded, so ``--resume`` continues
exactly where a run stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.lovasz import lovasz_softmax
from models.segmentation import SegmentationNet, load_pretrained
from models.student import sparse_input
from pipeline import finetune_config
from pipeline.finetune_config import FinetuneConfig
from pipeline.seg_data import SegDataset, seg_collate, select_rows
from pipeline.training import (
    CHECKPOINT,
    batch_order,
    gathered_rng_states,
    rank_checksums,
    rank_world,
    restore_rng,
    save_checkpoint,
    setup_distributed,
    step_seed,
)

IGNORE = -100


def targets(labels: torch.Tensor) -> torch.Tensor:
    """16-class labels 1..16 -> logit indices 0..15; the ignore label 0 -> ``IGNORE``."""
    return torch.where(labels > 0, labels - 1, torch.full_like(labels, IGNORE))


def segmentation_loss(point_logits: torch.Tensor, labels: torch.Tensor, lovasz: bool = True) -> dict[str, torch.Tensor]:
    """Cross-entropy (+ Lovasz-softmax) over the labelled points, in float32."""
    logits, target = point_logits.float(), targets(labels)
    parts = {"ce": F.cross_entropy(logits, target, ignore_index=IGNORE)}
    if lovasz:
        parts["lovasz"] = lovasz_softmax(logits.softmax(dim=1), target, ignore_index=IGNORE)
    return parts


def build_net(config: FinetuneConfig) -> tuple[SegmentationNet, dict | None]:
    """The model, with the pretrained backbone loaded when configured; (net, load report)."""
    net = SegmentationNet(bn_momentum=config.model.bn_momentum)
    report = None
    if config.model.pretrained:
        report = load_pretrained(net, Path(config.model.pretrained))
        if not any(k.startswith("backbone.") for k in report.loaded):
            from pipeline.errors import HvdError

            raise HvdError(f"{config.model.pretrained}: no backbone tensor matched by name and shape ({report.summary()})")
        report = report.to_dict() | {"summary": report.summary()}
    return net, report


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
    on_loaded: Callable[[dict | None], None] | None = None,
) -> dict:
    """Train; return {"steps", "first", "last", "out_dir", "load_report", "scenes", "examples"}."""
    from pipeline.index import ensure_index

    device = setup_distributed()
    rank, world = rank_world()
    run_dir = Path(config.run.out_dir)
    index, _ = ensure_index(catalog, config.data.source)
    rows, scenes = select_rows(index, "train", config.data.label_fraction, config.data.max_examples)
    dataset = SegDataset(index, rows, augment=config.data.augment, seed=config.run.seed)

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
    scaler = torch.amp.GradScaler("cuda", enabled=config.run.amp and device.type == "cuda")
    batches_per_epoch = len(batch_order(len(dataset), 0, 0, rank, world, config.data.batch_size))
    if batches_per_epoch == 0:
        from pipeline.errors import HvdError

        raise HvdError(f"{len(dataset)} training keyframes ({len(scenes)} scenes) is less than one batch of {config.data.batch_size} per process")
    total_steps = config.optim.epochs * batches_per_epoch
    if config.run.max_steps:
        total_steps = min(total_steps, config.run.max_steps)

    step, epoch, done_in_epoch = 0, 0, 0
    if resume and (run_dir / CHECKPOINT).exists():
        state = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=False)
        net.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, epoch, done_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        report = state["load_report"]
        restore_rng(state["rng"], rank)
    elif rank == 0:
        finetune_config.save(config, run_dir / "config.yaml")
    if on_loaded and rank == 0:
        on_loaded(report)

    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))
    first: dict | None = None
    last: dict = {}
    while step < total_steps and epoch < config.optim.epochs:
        dataset.set_epoch(epoch)
        batches = batch_order(len(dataset), config.run.seed, epoch, rank, world, config.data.batch_size)[done_in_epoch:]
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=seg_collate, num_workers=config.data.num_workers)
        model.train()
        if linear:
            net.backbone.eval()  # frozen: BatchNorm keeps the pretrained statistics
        for batch in loader:
            start = time.perf_counter()
            torch.manual_seed(step_seed(config.run.seed, step, rank))
            with torch.autocast(device.type, dtype=torch.float16, enabled=scaler.is_enabled()):
                logits = model(sparse_input(batch["coords"], [f.to(device) for f in batch["feats"]]), frozen_backbone=linear)
                parts = segmentation_loss(logits[batch["inverse"].to(device)], batch["labels"].to(device), config.optim.lovasz)
                loss = sum(parts.values())
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            step, done_in_epoch = step + 1, done_in_epoch + 1
            metrics = {k: float(v.detach()) for k, v in parts.items()} | {"total": float(loss.detach())}
            metrics["examples_per_s"] = batch["size"] * world / (time.perf_counter() - start)
            first = first or metrics
            last = metrics
            if writer and step % config.run.log_every == 0:
                for key, value in metrics.items():
                    writer.add_scalar(f"finetune/{key}", value, step)
                writer.add_scalar("finetune/lr_head", optimiser.param_groups[-1]["lr"], step)
            if on_step and rank == 0:
                on_step(step, total_steps, metrics)
            if step % config.run.checkpoint_every == 0 or step == total_steps:
                _checkpoint(run_dir, net, optimiser, scheduler, scaler, config, step, epoch, done_in_epoch, report)
            if step >= total_steps:
                break
        else:
            epoch, done_in_epoch = epoch + 1, 0
            scheduler.step()
    if writer:
        writer.close()
    result = {
        "steps": step,
        "first": first,
        "last": last,
        "out_dir": str(run_dir),
        "load_report": None if report is None else report["summary"],
        "scenes": scenes,
        "examples": len(dataset),
        "rank_checksums": rank_checksums(net),
    }
    if rank == 0:
        (run_dir / "summary.json").write_text(json.dumps(result, indent=1))
    return result


def _checkpoint(run_dir: Path, net: SegmentationNet, optimiser, scheduler, scaler, config: FinetuneConfig, step: int, epoch: int, done_in_epoch: int, report: dict | None) -> None:
    states = gathered_rng_states()
    if rank_world()[0] != 0:
        return
    save_checkpoint(
        run_dir,
        {
            "model": net.state_dict(),
            "optimizer": optimiser.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "step": step,
            "epoch": epoch,
            "batch_in_epoch": done_in_epoch,
            "rng": states,
            "config": config.model_dump(mode="json"),
            "load_report": report,
        },
    )
