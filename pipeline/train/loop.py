"""What the training loops share (``hvd train pretrain`` and ``hvd train finetune``): the process
group under ``torchrun``, the seeded per-rank batch order, random states for exact resume, the
atomic checkpoint write and the per-rank parameter digest."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.checkpoints import load_checkpoint
from pipeline.errors import HvdError

CHECKPOINT = "checkpoint.pt"
RESUME_KEYS = ("optimizer", "scheduler", "scaler", "step", "epoch", "batch_in_epoch", "rng")


def rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def setup_distributed() -> torch.device:
    """Join the process group when launched by ``torchrun`` (nccl on GPUs, gloo on the CPU); the
    device of this process."""
    if "RANK" in os.environ and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def rng_state() -> dict:
    """The random states, as checkpoint data: tuples, numbers and tensors only (the numpy key array
    as a tensor), so ``weights_only`` loading reads them without allowing any other type."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = (name, torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss), float(gauss))
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, key, *rest = state["numpy"]  # key: a tensor, or a numpy array in checkpoints of earlier versions
    np.random.set_state((name, np.asarray(key).astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def batch_order(n: int, seed: int, epoch: int, rank: int, world: int, batch_size: int) -> list[list[int]]:
    """This rank's batches of one epoch: a seeded shuffle, split evenly between ranks (the last
    incomplete batch is dropped)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    per_rank = len(perm) // world
    mine = perm[rank * per_rank : (rank + 1) * per_rank].tolist()
    return [mine[i : i + batch_size] for i in range(0, len(mine) - batch_size + 1, batch_size)]


def step_seed(seed: int, step: int, rank: int) -> int:
    """Every random draw of a step comes from (seed, step, rank): a resumed run repeats it exactly,
    whatever the data loading consumed in between."""
    return seed * 1_000_003 + step * 97 + rank


def gathered_rng_states() -> list[dict]:
    """Every rank's random state (a collective: all ranks must call it)."""
    rank, world = rank_world()
    if world == 1:
        return [rng_state()]
    states = [None] * world
    torch.distributed.all_gather_object(states, rng_state())
    return states


def restore_rng(states, rank: int) -> None:
    set_rng_state(states[rank] if isinstance(states, list) else states)


def save_checkpoint(run_dir: Path, state: dict) -> None:
    """Write ``checkpoint.pt`` atomically: a killed run leaves the previous one intact."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{CHECKPOINT}.tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())  # on disk before it replaces the previous one
    os.replace(tmp, run_dir / CHECKPOINT)


def rank_checksums(net: nn.Module) -> list[str]:
    """A digest of the parameters on every rank: DDP must keep them identical. (BatchNorm running
    statistics are not parameters: on the CPU each rank updates its own after rank 0's are broadcast
    at every forward, and checkpoints hold rank 0's.)"""
    digest = hashlib.sha256()
    for _, tensor in sorted(net.named_parameters()):
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    mine = digest.hexdigest()
    rank, world = rank_world()
    if world == 1:
        return [mine]
    gathered = [None] * world
    torch.distributed.all_gather_object(gathered, mine)
    return gathered


def autocast_dtype(amp: bool, device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype of a run: None (fp32, the paper's setting) unless ``amp`` is asked
    for on a GPU; then bfloat16 where the GPU supports it, else float16 (with gradient scaling).
    The CPU always trains in fp32 (MinkowskiEngine's CPU kernels have no half-precision path)."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def group_grad_norms(groups: dict[str, list[nn.Parameter]]) -> dict[str, float]:
    """L2 norm of the gradient of each parameter group (parameters without a gradient count 0)."""
    norms = {}
    for name, params in groups.items():
        grads = [p.grad.detach().float().pow(2).sum() for p in params if p.grad is not None]
        norms[name] = float(torch.stack(grads).sum().sqrt()) if grads else 0.0
    return norms


def clip_gradients(groups: dict[str, list[nn.Parameter]], max_norm: float, scope: str) -> None:
    """Clip each group's gradient norm to ``max_norm`` on its own (``scope="group"``), so one group's
    large gradient (the depth net's) cannot shrink another's (the student's); or all of them as one
    vector (``scope="global"``, torch's usual ``clip_grad_norm_``)."""
    if scope == "global":
        torch.nn.utils.clip_grad_norm_([p for params in groups.values() for p in params], max_norm)
        return
    for params in groups.values():
        torch.nn.utils.clip_grad_norm_(params, max_norm)


class Loop:
    """The loop both trainings run: epochs of a seeded per-rank batch order, one optimiser step per
    batch (fp32, or autocast on a GPU when asked for), the gradient norm of every parameter group
    logged before any clipping (optional, per group), TensorBoard scalars, an atomic checkpoint every
    ``checkpoint_every`` steps and at the end, the cosine schedule stepped per epoch, and exact resume
    (position in the data, random states). A non-finite loss or gradient stops the run before the
    optimiser step, so the checkpoint on disk stays the last good one.

    ``config`` is a run config with ``data`` (batch_size, num_workers), ``optim`` (epochs, optionally
    clip_grad_norm and clip_scope) and ``run`` (out_dir, seed, max_steps, checkpoint_every, log_every,
    amp); ``groups`` names the parameter groups whose gradient norms are logged (and clipped)."""

    def __init__(self, config, *, net: nn.Module, model: nn.Module, optimiser, scheduler, device: torch.device, n_examples: int, tag: str, groups: dict[str, list[nn.Parameter]]) -> None:
        self.config, self.net, self.model, self.device, self.tag = config, net, model, device, tag
        self.optimiser, self.scheduler, self.groups = optimiser, scheduler, groups
        self.amp_dtype = autocast_dtype(config.run.amp, device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.rank, self.world = rank_world()
        self.run_dir = Path(config.run.out_dir)
        self.n_examples = n_examples
        self.batches_per_epoch = len(batch_order(n_examples, 0, 0, self.rank, self.world, config.data.batch_size))
        self.total_steps = config.optim.epochs * self.batches_per_epoch
        if config.run.max_steps:
            self.total_steps = min(self.total_steps, config.run.max_steps)
        self.step = self.epoch = self.done_in_epoch = 0
        self.saved_step: int | None = None  # the step of the checkpoint on disk (resumed from or last written)

    def resume(self) -> dict | None:
        """Restore the optimiser, schedule, scaler, position and random states from the run folder's
        checkpoint; return the checkpoint (the caller restores its weights), or None without one."""
        path = self.run_dir / CHECKPOINT
        if not path.exists():
            return None
        state = load_checkpoint(path)
        missing = [key for key in RESUME_KEYS if not isinstance(state, dict) or key not in state]
        if missing:
            raise HvdError(f"{path} is not a checkpoint of an hvd training run (no {', '.join(missing)}): start the run afresh without --resume, or in another folder")
        self.optimiser.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.done_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        restore_rng(state["rng"], self.rank)
        self.saved_step = self.step
        return state

    def run(self, dataset, collate, compute, *, weights, extra: dict | None = None, before_epoch=None, on_step=None, pictures=None) -> dict:
        """Train to the end; ``compute(batch, generator) -> (loss parts, total loss)``, ``weights()``
        the model entries of a checkpoint, ``extra`` more entries; ``pictures(batch)`` (rank 0, every
        ``run.image_every`` steps) -> {tag: (H, W, 3) uint8} images for TensorBoard. Returns {"steps",
        "first", "last", "out_dir", "rank_checksums"} (first and last: the losses of the first and
        last step run)."""
        cfg = self.config
        writer = None
        if self.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        first: dict | None = None
        last: dict = {}
        try:
            while self.step < self.total_steps and self.epoch < cfg.optim.epochs:
                dataset.set_epoch(self.epoch)
                batches = batch_order(self.n_examples, cfg.run.seed, self.epoch, self.rank, self.world, cfg.data.batch_size)[self.done_in_epoch :]
                loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=cfg.data.num_workers)
                self.model.train()
                if before_epoch:
                    before_epoch()
                for batch in loader:
                    metrics = self._step(batch, compute)
                    first, last = first or metrics, metrics
                    if writer and self.step % cfg.run.log_every == 0:
                        for key, value in metrics.items():
                            writer.add_scalar(f"{self.tag}/{key}", value, self.step)
                        writer.add_scalar(f"{self.tag}/lr", self.optimiser.param_groups[0]["lr"], self.step)
                    every = getattr(cfg.run, "image_every", 0)
                    if writer and pictures and every and self.step % every == 0:
                        for key, rgb in pictures(batch).items():
                            writer.add_image(f"{self.tag}/{key}", rgb, self.step, dataformats="HWC")
                    if on_step and self.rank == 0:
                        on_step(self.step, self.total_steps, metrics)
                    if self.step % cfg.run.checkpoint_every == 0 or self.step == self.total_steps:
                        self.checkpoint(weights(), extra or {})
                    if self.step >= self.total_steps:
                        break
                else:  # the epoch is over: the cosine schedule steps per epoch
                    self.epoch, self.done_in_epoch = self.epoch + 1, 0
                    self.scheduler.step()
        finally:
            if writer:
                writer.close()
        return {"steps": self.step, "first": first, "last": last, "out_dir": str(self.run_dir), "rank_checksums": rank_checksums(self.net)}

    def _step(self, batch: dict, compute) -> dict:
        start = time.perf_counter()
        seed = step_seed(self.config.run.seed, self.step, self.rank)  # dropout, sampled matches
        torch.manual_seed(seed)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            parts, loss = compute(batch, generator)
        losses = {k: float(v.detach()) for k, v in parts.items()} | {"total": float(loss.detach())}
        self.optimiser.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimiser)  # a no-op without float16 scaling: norms are of the true gradients
        norms = group_grad_norms(self.groups)  # before any clipping
        # float16 scaling skips a step with an infinite gradient and lowers the scale: that is no failure
        self._stop_if_non_finite(batch, losses, {} if self.scaler.is_enabled() else norms)
        clip = getattr(self.config.optim, "clip_grad_norm", None)
        if clip:
            clip_gradients(self.groups, clip, getattr(self.config.optim, "clip_scope", "group"))
        self.scaler.step(self.optimiser)
        self.scaler.update()
        self.step, self.done_in_epoch = self.step + 1, self.done_in_epoch + 1
        metrics = losses | {f"grad_norm/{name}": value for name, value in norms.items()}
        metrics["examples_per_s"] = batch["size"] * self.world / (time.perf_counter() - start)
        return metrics

    def _stop_if_non_finite(self, batch: dict, losses: dict[str, float], norms: dict[str, float]) -> None:
        """Raise an ``HvdError`` on every rank, before the optimiser moves any weight, when a loss term
        (or the total) or a gradient norm of some rank is infinite or NaN; the message names the step,
        the terms, the batch's samples and the checkpoint left on disk (the last good one: this step
        is never saved). A collective under DDP, so that no rank is left waiting for the others."""
        bad_losses = {k: v for k, v in losses.items() if not math.isfinite(v)}
        bad_norms = [k for k, v in norms.items() if not math.isfinite(v)]
        problem = None
        if bad_losses or bad_norms:
            tokens = ", ".join(batch.get("tokens") or ["(not recorded)"])
            what = (
                f"non-finite loss {', '.join(f'{k}={v}' for k, v in bad_losses.items())}"
                if bad_losses
                else f"non-finite gradient in {', '.join(bad_norms)} (losses {', '.join(f'{k}={v:.4g}' for k, v in losses.items())})"
            )
            problem = f"{what} on sample{'s' if len(batch.get('tokens') or []) > 1 else ''} {tokens}" + (f" (rank {self.rank})" if self.world > 1 else "")
        problems = [problem]
        if self.world > 1:
            flag = torch.tensor([1.0 if problem else 0.0], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            if flag.item() == 0:
                return
            problems = [None] * self.world
            torch.distributed.all_gather_object(problems, problem)
        if not any(problems):
            return
        kept = f"{self.run_dir / CHECKPOINT} keeps step {self.saved_step}" if self.saved_step is not None else "no checkpoint was written"
        raise HvdError(
            f"step {self.step + 1}: {'; '.join(p for p in problems if p)}; training stopped before this step's update and {kept}: "
            "check these samples' inputs, or lower optim.lr (or set optim.clip_grad_norm), then run again (--resume continues from the checkpoint)"
        )

    def checkpoint(self, weights: dict, extra: dict) -> None:
        """Every rank's random state gathered to rank 0, which writes the checkpoint atomically."""
        states = gathered_rng_states()
        self.saved_step = self.step
        if self.rank != 0:
            return
        state = {
            **weights,
            "optimizer": self.optimiser.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.done_in_epoch,
            "rng": states,
            "config": self.config.model_dump(mode="json"),
            **extra,
        }
        save_checkpoint(self.run_dir, state)

    def summary(self, result: dict) -> dict:
        """Write ``summary.json`` (rank 0) and return ``result``."""
        if self.rank == 0:
            (self.run_dir / "summary.json").write_text(json.dumps(result, indent=1))
        return result
