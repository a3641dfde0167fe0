"""Pretraining from the stores: every enabled loss goes down while the student's backbone moves, the
depth and BEV losses do not throttle the student, the per-group gradient norms reach TensorBoard, a
killed run resumes to the very weights of an uninterrupted one, and two torchrun processes (gloo) end
with identical weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from pipeline.train import pretrain_config
from pipeline.train.pretrain import build_net, train
from pipeline.train.pretrain_data import open_stores

REPO = Path(__file__).resolve().parents[3]


def _config(catalog, out: Path, **run) -> dict:
    return {
        "data": {"catalog": str(catalog.path), "source": "tiny", "batch_size": 1, "num_workers": 0, "max_examples": 2, "augment": {"enabled": False}},
        "optim": {"lr": 0.1, "epochs": 100},
        "run": {"out_dir": str(out), **run},
    }


GROUPS = ("student_backbone", "student_heads", "decoder", "bridge", "depth_net")


def _initial_backbone(catalog, data: dict) -> dict:
    config = pretrain_config.build(None, None, data)
    return build_net(config, open_stores(catalog, config.data.source)).student.backbone.state_dict()


def _moved(initial: dict, run_dir: Path) -> float:
    """|backbone - initial| / |initial| over the backbone's parameters (not BatchNorm statistics)."""
    trained = torch.load(run_dir / "checkpoint.pt", weights_only=True)["student"]
    keys = [k for k in initial if initial[k].is_floating_point() and "running" not in k]
    moved = sum(float(((trained[f"backbone.{k}"] - initial[k]) ** 2).sum()) for k in keys) ** 0.5
    return moved / sum(float((initial[k] ** 2).sum()) for k in keys) ** 0.5


def _scalars(run_dir: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_every_enabled_loss_goes_down(tiny_stores, tmp_path):
    """Overfitting one keyframe (fixed seed, no augmentation, no clipping): each loss ends clearly
    lower, the student's backbone weights changed, and TensorBoard holds the gradient norm of every
    parameter group at every step."""
    data = _config(tiny_stores, tmp_path / "run", max_steps=10, checkpoint_every=10)
    data["data"]["max_examples"] = 1
    initial = _initial_backbone(tiny_stores, data)
    result = train(pretrain_config.build(None, None, data), catalog=tiny_stores)
    first, last = result["first"], result["last"]
    for name in ("ipv", "bev", "depth"):
        assert last[name] < 0.96 * first[name], (name, first[name], last[name])
    assert _moved(initial, tmp_path / "run") > 1e-3
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["optim"]["lr"] == 0.1 and saved["losses"]["depth_weight"] == 60.0
    assert saved["optim"]["clip_grad_norm"] is None and saved["run"]["amp"] is False
    scalars = _scalars(tmp_path / "run")
    for group in GROUPS:
        norms = scalars[f"pretrain/grad_norm/{group}"]
        assert len(norms) == 10 and all(n > 0 for n in norms), (group, norms)
    assert first["grad_norm/student_backbone"] > 0


def test_depth_and_bev_losses_do_not_throttle_the_student(tiny_stores, tmp_path):
    """Same initialisation, seed and batches, no clipping: under HVDistill (IPV + BEV + depth) the
    backbone moves at least half as far as under IPV alone (SLidR). A global gradient clip or a depth
    loss on the wrong scale leaves the HVDistill student at a few per cent of SLidR's step."""
    moved = {}
    for name, losses in {"ipv": {"bev": False, "depth": False}, "hvdistill": {}}.items():
        data = _config(tiny_stores, tmp_path / name, max_steps=3, checkpoint_every=3)
        data["losses"] = losses
        initial = _initial_backbone(tiny_stores, data)
        train(pretrain_config.build(None, None, data), catalog=tiny_stores)
        moved[name] = _moved(initial, tmp_path / name)
    assert moved["ipv"] > 1e-3
    assert moved["hvdistill"] >= 0.5 * moved["ipv"], moved


def test_slidr_style_pretraining_in_cylindrical_voxels(tiny_stores, tmp_path):
    """IPV + depth on SLidR's input (cylindrical voxels, raw intensity) trains a step, and the
    checkpoint records the convention for fine-tuning. (Narrow networks: the check is the input's.)"""
    from models.segmentation import read_pretrained
    from pipeline.train.voxelize import SLIDR_INPUT

    data = _config(tiny_stores, tmp_path / "run", max_steps=1, checkpoint_every=1)
    data["data"]["max_examples"] = 1
    data["model"] = {"student_width": 0.25, "bridge_channels": 32, "depth_channels": 32, "input": SLIDR_INPUT.model_dump()}
    data["losses"] = {"bev": False}
    result = train(pretrain_config.build(None, None, data), catalog=tiny_stores)
    assert set(result["first"]) >= {"ipv", "depth"} and "bev" not in result["first"]
    assert all(torch.isfinite(torch.tensor(result["first"][name])) for name in ("ipv", "depth"))
    assert read_pretrained(tmp_path / "run" / "checkpoint.pt").input == SLIDR_INPUT.model_dump()


def _run(args: list[str], env: dict, **kw):
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO, env=env, capture_output=True, text=True, **kw)


def test_killed_run_resumes_to_the_same_weights(tiny_stores, tmp_path):
    """With one thread per process the CPU kernels are deterministic, so the resumed run must equal
    the uninterrupted one exactly (with several threads, reductions are unordered: ~1e-5)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(_config(tiny_stores, tmp_path / "unused", max_steps=4, checkpoint_every=2)))
    whole = _run(["train", "pretrain", "--config", str(config), "--out", str(tmp_path / "whole")], env, timeout=600)
    assert whole.returncode == 0, whole.stderr

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "train", "pretrain", "--config", str(config), "--out", str(killed_dir)], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 600
    while not (killed_dir / "checkpoint.pt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert torch.load(killed_dir / "checkpoint.pt", weights_only=True)["step"] == 2

    resumed = _run(["train", "pretrain", "--config", str(config), "--out", str(killed_dir), "--resume"], env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    b = torch.load(killed_dir / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    for part in ("student", "heads"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), f"{part}.{key}"
    assert json.loads((killed_dir / "summary.json").read_text())["rank_checksums"] == json.loads((tmp_path / "whole" / "summary.json").read_text())["rank_checksums"]


def test_two_torchrun_processes_end_with_identical_weights(tiny_stores, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(_config(tiny_stores, tmp_path / "ddp", max_steps=2, checkpoint_every=2)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "cli.main", "train", "pretrain", "--config", str(config)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["steps"] == 2 and len(summary["rank_checksums"]) == 2
    assert summary["rank_checksums"][0] == summary["rank_checksums"][1]


def test_nan_loss_stops_pretraining_and_keeps_the_last_checkpoint(tiny_stores, tmp_path, monkeypatch):
    """The depth loss turns NaN at step 2 (as an all-NaN teacher row would make it): the run stops
    with an error naming the step, the term and the keyframe, and checkpoint.pt is byte for byte the
    one written after step 1 (the failing step's weights are never saved)."""
    import hashlib

    import pytest

    from pipeline.errors import HvdError
    from pipeline.train import loop as loop_module
    from pipeline.train.pretrain import PretrainNet

    forward, tokens, saves = PretrainNet.forward, [], []

    def nan_depth_from_step_2(self, batch, generator):
        losses = forward(self, batch, generator)
        tokens.append(batch["tokens"])
        if len(tokens) == 2:
            losses["depth"] = losses["depth"] * float("nan")
        return losses

    write = loop_module.save_checkpoint

    def save(run_dir, state):
        write(run_dir, state)
        saves.append((state["step"], hashlib.sha256((run_dir / "checkpoint.pt").read_bytes()).hexdigest()))

    monkeypatch.setattr(PretrainNet, "forward", nan_depth_from_step_2)
    monkeypatch.setattr(loop_module, "save_checkpoint", save)
    data = _config(tiny_stores, tmp_path / "run", max_steps=3, checkpoint_every=1)
    data["model"] = {"student_width": 0.25, "bridge_channels": 64, "depth_channels": 32}  # the check is the loop's, not the network's
    with pytest.raises(HvdError) as error:
        train(pretrain_config.build(None, None, data), catalog=tiny_stores)
    message = str(error.value)
    assert message.startswith(f"step 2: non-finite loss depth=nan, total=nan on sample {tokens[1][0]};"), message
    assert f"{tmp_path / 'run' / 'checkpoint.pt'} keeps step 1" in message
    assert [step for step, _ in saves] == [1]
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == saves[0][1]
    state = torch.load(checkpoint, weights_only=True)
    assert state["step"] == 1 and all(torch.isfinite(v).all() for v in state["student"].values() if v.is_floating_point())
