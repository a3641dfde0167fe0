"""Pretraining from the stores: every enabled loss goes down, a killed run resumes to the very
weights of an uninterrupted one, and two torchrun processes (gloo) end with identical weights."""

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

from pipeline import pretrain_config
from pipeline.train_pretrain import train

REPO = Path(__file__).resolve().parents[2]


def _config(catalog, out: Path, **run) -> dict:
    return {
        "data": {"catalog": str(catalog.path), "source": "tiny", "batch_size": 1, "num_workers": 0, "max_examples": 2, "augment": {"enabled": False}},
        "optim": {"lr": 0.1, "epochs": 100, "clip_grad_norm": 5.0},
        "run": {"out_dir": str(out), **run},
    }


def test_every_enabled_loss_goes_down(tiny_stores, tmp_path):
    """Overfitting one keyframe (fixed seed, no augmentation): each loss ends clearly lower."""
    data = _config(tiny_stores, tmp_path / "run", max_steps=10, checkpoint_every=10)
    data["data"]["max_examples"] = 1
    result = train(pretrain_config.build(None, None, data), catalog=tiny_stores)
    first, last = result["first"], result["last"]
    for name in ("ipv", "bev", "depth"):
        assert last[name] < 0.96 * first[name], (name, first[name], last[name])
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["optim"]["lr"] == 0.1 and saved["losses"]["depth_weight"] == 60.0
    assert any((tmp_path / "run" / "tensorboard").iterdir())


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
    assert torch.load(killed_dir / "checkpoint.pt", weights_only=False)["step"] == 2

    resumed = _run(["train", "pretrain", "--config", str(config), "--out", str(killed_dir), "--resume"], env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=False)
    b = torch.load(killed_dir / "checkpoint.pt", weights_only=False)
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
