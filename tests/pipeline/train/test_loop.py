"""The training loop's gradient handling: per-group norms, per-group vs global clipping, fp32 by default."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.train.loop import autocast_dtype, clip_gradients, group_grad_norms
from pipeline.train.pretrain_config import OptimConfig, RunConfig


def _groups(small: float, large: float) -> dict[str, list[nn.Parameter]]:
    """Two groups whose gradients have norms ``small`` (3-4-0 pattern) and ``large``."""
    a, b, c = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(1))
    a.grad = torch.tensor([3.0, 4.0, 0.0]) * small / 5
    b.grad, c.grad = torch.tensor([large, 0.0]), None  # c: no gradient (an unused parameter)
    return {"student": [a], "depth_net": [b, c]}


def test_group_norms_by_hand():
    norms = group_grad_norms(_groups(2.0, 300.0))
    assert norms == pytest.approx({"student": 2.0, "depth_net": 300.0})
    assert group_grad_norms({"empty": [nn.Parameter(torch.zeros(2))]}) == {"empty": 0.0}


def test_per_group_clip_leaves_the_small_group_alone():
    groups = _groups(2.0, 300.0)
    clip_gradients(groups, 5.0, "group")
    assert group_grad_norms(groups) == pytest.approx({"student": 2.0, "depth_net": 5.0})


def test_global_clip_throttles_every_group_by_the_largest():
    groups = _groups(2.0, 300.0)
    clip_gradients(groups, 5.0, "global")
    scale = 5.0 / (2.0**2 + 300.0**2) ** 0.5
    assert group_grad_norms(groups) == pytest.approx({"student": 2.0 * scale, "depth_net": 300.0 * scale}, rel=1e-5)


def test_defaults_are_the_papers_fp32_and_no_clip():
    assert OptimConfig().clip_grad_norm is None and OptimConfig().clip_scope == "group"
    assert RunConfig().amp is False
    assert autocast_dtype(False, torch.device("cpu")) is None
    assert autocast_dtype(True, torch.device("cpu")) is None  # the CPU trains in fp32 whatever is asked


# --- non-finite numbers stop the run; checkpoints are data -------------------------------------------


class _Samples(torch.utils.data.Dataset):
    """Four one-row examples ``sample-i`` of input ``x[i]``."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def set_epoch(self, epoch: int) -> None:
        pass

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"token": f"sample-{i}", "x": self.x[i]}


def _collate(examples: list[dict]) -> dict:
    return {"tokens": [e["token"] for e in examples], "size": len(examples), "x": torch.stack([e["x"] for e in examples])}


def _tiny_loop(tmp_path, monkeypatch, x: torch.Tensor, loss):
    """A Loop over a 2 -> 1 linear model, one example per step, a checkpoint after every step; runs
    to the end or the first error. Returns (loop, net, saves, error): ``saves`` holds (step, sha256
    of checkpoint.pt, weights) after every write."""
    import hashlib

    from pipeline.errors import HvdError
    from pipeline.train import loop as loop_module
    from pipeline.train.pretrain_config import PretrainConfig

    config = PretrainConfig.model_validate(
        {"data": {"batch_size": 1, "num_workers": 0}, "optim": {"lr": 0.1, "epochs": 1}, "run": {"out_dir": str(tmp_path / "run"), "checkpoint_every": 1}}
    )
    torch.manual_seed(0)
    net = nn.Linear(2, 1, bias=False)
    optimiser = torch.optim.SGD(net.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=1)
    loop = loop_module.Loop(config, net=net, model=net, optimiser=optimiser, scheduler=scheduler, device=torch.device("cpu"), n_examples=len(x), tag="t", groups={"linear": list(net.parameters())})
    saves, write = [], loop_module.save_checkpoint

    def save(run_dir, state):
        write(run_dir, state)
        saves.append((state["step"], hashlib.sha256((run_dir / "checkpoint.pt").read_bytes()).hexdigest(), net.weight.detach().clone()))

    def compute(batch, generator):
        parts = {"fit": loss(net(batch["x"]))}
        return parts, parts["fit"]

    monkeypatch.setattr(loop_module, "save_checkpoint", save)
    try:
        loop.run(_Samples(x), _collate, compute, weights=lambda: {"model": net.state_dict()})
    except HvdError as exc:
        return loop, net, saves, exc
    return loop, net, saves, None


def _position_of(sample: int, n: int = 4) -> int:
    """The 1-based step at which example ``sample`` is trained (seed 0, epoch 0, one per batch)."""
    from pipeline.train.loop import batch_order

    return [b[0] for b in batch_order(n, 0, 0, 0, 1, 1)].index(sample) + 1


@pytest.mark.parametrize("sample", [2, 3])
def test_nan_loss_stops_before_the_update_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, sample):
    """A NaN input reaches the loss at step k: the error names step k, the term and the sample; the
    checkpoint on disk is byte for byte the one written after step k - 1, no later one was written,
    and the weights in memory were not moved by the failing step."""
    import hashlib

    x = torch.ones(4, 2)
    x[sample, 0] = float("nan")
    k = _position_of(sample)
    _, net, saves, error = _tiny_loop(tmp_path, monkeypatch, x, lambda y: ((y - 3) ** 2).mean())
    assert error is not None
    message = str(error)
    assert message.startswith(f"step {k}: non-finite loss fit=nan, total=nan on sample sample-{sample};"), message
    assert [step for step, _, _ in saves] == list(range(1, k))
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    if k == 1:
        assert not checkpoint.exists() and "no checkpoint was written" in message
        return
    assert f"keeps step {k - 1}" in message
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == saves[-1][1]
    on_disk = torch.load(checkpoint, weights_only=True)
    assert on_disk["step"] == k - 1 and torch.equal(on_disk["model"]["weight"], saves[-1][2])
    assert torch.equal(net.weight.detach(), saves[-1][2]) and torch.isfinite(net.weight).all()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.pt", "tensorboard"]  # no temporary left


def test_non_finite_gradient_stops_the_run_too(tmp_path, monkeypatch):
    """sqrt(|w x|) at x = 0: the loss is 0 but its gradient is NaN; the step must not be taken."""
    x = torch.ones(4, 2)
    x[1] = 0.0
    k = _position_of(1)
    _, net, saves, error = _tiny_loop(tmp_path, monkeypatch, x, lambda y: y.abs().sqrt().sum())
    assert error is not None and str(error).startswith(f"step {k}: non-finite gradient in linear (losses fit=0, total=0) on sample sample-1")
    assert [step for step, _, _ in saves] == list(range(1, k)) and torch.isfinite(net.weight).all()


def test_finite_run_checkpoints_every_step(tmp_path, monkeypatch):
    """The same loop without a bad number runs to the end (the checks above are not always on)."""
    loop, _, saves, error = _tiny_loop(tmp_path, monkeypatch, torch.ones(4, 2), lambda y: ((y - 3) ** 2).mean())
    assert error is None and loop.step == 4 and [step for step, _, _ in saves] == [1, 2, 3, 4]


def test_random_states_are_plain_data_and_old_numpy_states_still_load(tmp_path):
    """A checkpoint's random states load with ``weights_only=True`` and nothing registered, and
    restore the very draws; a state written by earlier versions (numpy's array) still loads."""
    import random

    import numpy as np

    from models.checkpoints import load_checkpoint
    from pipeline.train.loop import rng_state, save_checkpoint, set_rng_state

    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_checkpoint(tmp_path, {"rng": rng_state()})
    expected = (random.random(), np.random.rand(3), torch.rand(2))
    set_rng_state(torch.load(tmp_path / "checkpoint.pt", weights_only=True)["rng"])
    again = (random.random(), np.random.rand(3), torch.rand(2))
    assert again[0] == expected[0] and np.array_equal(again[1], expected[1]) and torch.equal(again[2], expected[2])

    np.random.seed(4)
    torch.save({"rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}}, tmp_path / "old.pt")
    draw = np.random.rand(3)
    set_rng_state(load_checkpoint(tmp_path / "old.pt")["rng"])
    assert np.array_equal(np.random.rand(3), draw)
