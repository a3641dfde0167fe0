"""What the training loops share (``hvd train pretrain`` and ``hvd train finetune``): the process
group under ``torchrun``, the seeded per-rank batch order, random states for exact resume, the
atomic checkpoint write and the per-rank parameter digest."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

CHECKPOINT = "checkpoint.pt"


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
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
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
    torch.save(state, tmp)
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
