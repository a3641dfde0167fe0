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
