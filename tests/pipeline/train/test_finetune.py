"""Fine-tuning and evaluation on the tiny synthetic data: a short run beats chance on the validation
scene, linear probing trains the head only, a stopped run resumes to the very weights of an
uninterrupted one, and ``hvd eval`` writes the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.stages import Catalog
from pipeline.train import finetune_config
from pipeline.train.evaluate import evaluate
from pipeline.train.finetune import train
from tests.conftest import catalog_for

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tiny_catalog(tiny_root, tmp_path_factory) -> Catalog:
    return Catalog.load(catalog_for(tmp_path_factory.mktemp("finetune"), tiny_root))


def _config(catalog: Catalog, out: Path, **over):
    data = {
        "data": {"catalog": str(catalog.path), "source": "tiny", "batch_size": 2, "num_workers": 0, "augment": False},
        "optim": {"lr": 0.05, "head_lr": 0.5, "epochs": 100},
        "run": {"out_dir": str(out), "checkpoint_every": 100},
    }
    for key, value in over.items():
        data[key] = {**data.get(key, {}), **value}
    return finetune_config.build(None, None, data)


def test_short_finetune_beats_chance(tiny_catalog, tmp_path):
    """24 steps from scratch on the training scene (mini_train's scene-0061); on the held-out scene
    (mini_val's scene-0103) the accuracy and mIoU must beat those of guessing each point's class
    from the label frequencies. (BatchNorm momentum 0.3: at the default 0.05 the running statistics
    evaluation uses are still mostly initial after a few dozen steps. Half width, to afford 24 steps:
    after 12 the weights still move so fast that eval-mode statistics lag behind them and even the
    training scene scores below chance; after 24 both scenes are far above it.)"""
    config = _config(tiny_catalog, tmp_path / "run", run={"max_steps": 24}, model={"bn_momentum": 0.3, "width": 0.5}, data={"batch_size": 1})
    result = train(config, catalog=tiny_catalog)
    assert result["last"]["ce"] < 0.7 * result["first"]["ce"], result
    report = evaluate(tmp_path / "run", catalog=tiny_catalog, num_workers=0)
    counts = np.asarray(report["confusion"]).sum(axis=1).astype(float)
    p = counts / counts.sum()
    chance_accuracy = float((p**2).sum())
    present = p > 0
    chance_iou = (p * p)[present] / (p + p - p * p)[present]  # TP = p^2, union = 2p - p^2 (fractions)
    assert report["keyframes"] == 4 and report["split"] == "val"
    assert report["accuracy"] > chance_accuracy + 0.1, (report["accuracy"], chance_accuracy)
    assert report["miou"] > 1.5 * chance_iou.mean(), (report["miou"], chance_iou.mean())


def test_linear_probe_trains_the_head_only_and_resumes_exactly(tiny_catalog, tmp_path):
    torch.manual_seed(0)
    from models.student import Student

    pretrained = tmp_path / "pre.pt"
    torch.save({"student": Student().state_dict()}, pretrained)
    over = {"model": {"pretrained": str(pretrained), "mode": "linear"}, "data": {"max_examples": 4}}
    whole = train(_config(tiny_catalog, tmp_path / "whole", run={"max_steps": 4}, **over), catalog=tiny_catalog)
    assert whole["load_report"].startswith(f"{len(Student().backbone.state_dict())} tensors loaded")

    first = train(_config(tiny_catalog, tmp_path / "split", run={"max_steps": 2}, **over), catalog=tiny_catalog)
    assert first["steps"] == 2
    rest = train(_config(tiny_catalog, tmp_path / "split", run={"max_steps": 4}, **over), catalog=tiny_catalog, resume=True)
    assert rest["steps"] == 4

    over_cached = {"model": {**over["model"], "cache_frozen_features": True}, "data": over["data"]}
    train(_config(tiny_catalog, tmp_path / "cached", run={"max_steps": 4}, **over_cached), catalog=tiny_catalog)
    c = torch.load(tmp_path / "cached" / "checkpoint.pt", weights_only=True)["model"]
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["model"]
    for key in ("head.kernel", "head.bias"):  # features computed once and reused: the same training
        torch.testing.assert_close(c[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)["model"]
    loaded = torch.load(pretrained, weights_only=True)["student"]
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, rtol=0, atol=1e-6, msg=key)
        if key.startswith("backbone."):  # frozen: parameters and BatchNorm statistics untouched
            assert torch.equal(value, loaded[key]), key
    assert not torch.equal(a["head.kernel"], b["head.kernel"] * 0)


def test_cli_finetune_then_eval(tiny_catalog, tmp_path):
    env = {**os.environ, "COLUMNS": "200"}
    run = tmp_path / "cli"
    args = ["train", "finetune", "--catalog", str(tiny_catalog.path), "--source", "tiny", "--max-steps", "1", "--out", str(run), "--label-fraction", "1"]
    done = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    said = done.stdout + done.stderr
    assert "training from scratch" in said and "1 official training scenes" in said and "input: cartesian voxels of 0.1 m, intensity / 255" in said
    done = subprocess.run([sys.executable, "-m", "cli.main", "eval", str(run), "--max-examples", "1"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "mIoU" in done.stdout + done.stderr and "driveable_surface" in done.stdout + done.stderr
    report = json.loads((run / "eval-val.json").read_text())
    assert report["keyframes"] == 1 and len(report["confusion"]) == 16
    missing = subprocess.run([sys.executable, "-m", "cli.main", "eval", str(tmp_path / "nothing")], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_width_and_input_follow_the_pretraining_checkpoint(tiny_catalog, tmp_path, monkeypatch):
    """A narrower pretrained student (model.student_width 0.5) trained in SLidR's input convention
    (cylindrical voxels, raw intensity) is fine-tuned and evaluated at its own width and in its own
    convention without being told: every backbone tensor loads, none is of another shape, the run's
    config and checkpoint record the convention and evaluation feeds the model with it."""
    import yaml

    from models.student import Student, StudentConfig
    from pipeline.train import downstream
    from pipeline.train.seg_data import SegDataset
    from pipeline.train.voxelize import SLIDR_INPUT

    torch.manual_seed(1)
    path = tmp_path / "pretrain.pt"
    slidr = SLIDR_INPUT.model_dump()
    torch.save({"student": Student(StudentConfig(width=0.5)).state_dict(), "config": {"model": {"student_width": 0.5, "input": slidr}}}, path)
    config = _config(tiny_catalog, tmp_path / "run", run={"max_steps": 1}, model={"pretrained": str(path)}, data={"batch_size": 1})
    result = train(config, catalog=tiny_catalog)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"]
    assert saved["width"] == 0.5 and saved["input"] == slidr
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["config"]["model"]["input"] == slidr
    assert "of another shape" not in result["load_report"] and "tensors loaded" in result["load_report"]
    fed = []
    monkeypatch.setattr(downstream, "SegDataset", lambda *a, **kw: fed.append(kw["input"]) or SegDataset(*a, **kw))
    report = evaluate(tmp_path / "run", catalog=tiny_catalog, num_workers=0, max_examples=1)
    assert report["keyframes"] == 1 and fed == [SLIDR_INPUT]


def test_the_dataset_feeds_the_convention_it_is_given(tiny_catalog):
    """Every point is kept (no range filter), voxelised and scaled as ``model.input`` says."""
    from pipeline.data.sensor_data import load_points
    from pipeline.stages.index import ensure_index
    from pipeline.train.seg_data import SegDataset, select_rows
    from pipeline.train.voxelize import SLIDR_INPUT, InputSettings, student_input

    index, _ = ensure_index(tiny_catalog, "tiny")
    rows, _ = select_rows(index, "val", max_examples=1)
    points = load_points(index.record(int(rows[0]))["lidar_path"])
    for settings in (InputSettings(), SLIDR_INPUT):
        example = SegDataset(index, rows, augment=False, input=settings)[0]
        voxels, feats = student_input(points[:, :3].astype(np.float64), points[:, 3], settings)
        np.testing.assert_array_equal(example["coords"], voxels.coords)
        np.testing.assert_array_equal(example["feats"], feats)
        assert len(example["inverse"]) == len(example["labels"]) == len(points)
    assert example["feats"].max() > 1  # raw intensity, 0-255


def test_a_label_fraction_that_keeps_no_scene_says_so(tiny_catalog):
    """The tiny dataset has one official training scene: half of it, counted as SLidR does (the 2nd,
    4th, ...), is none, and the error says how many there are and what would keep one."""
    from pipeline.errors import HvdError
    from pipeline.stages.index import ensure_index
    from pipeline.train.seg_data import ordinal, select_rows

    index, _ = ensure_index(tiny_catalog, "tiny")
    with pytest.raises(HvdError) as error:
        select_rows(index, "train", label_fraction=0.5)
    assert "every 2nd of the 1 official training scenes" in str(error.value) and "at least 1/1" in str(error.value)
    rows, scenes = select_rows(index, "train", label_fraction=1.0)
    assert scenes == ["scene-0061"] and len(rows) == 4
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 100, 101, 112)] == ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "100th", "101st", "112th"]


def test_code_in_pretrained_weights_is_refused(tiny_catalog, tmp_path):
    """``--pretrained`` pointing at a pickle that would run code: fine-tuning stops with one line
    naming the file, and the payload never ran."""
    from pipeline.errors import HvdError
    from tests.unsafe_pickle import malicious_checkpoint

    marker = tmp_path / "marker"
    path = malicious_checkpoint(tmp_path / "pretrain" / "checkpoint.pt", marker, config={"model": {"student_width": 1.0}})
    config = _config(tiny_catalog, tmp_path / "run", run={"max_steps": 1}, model={"pretrained": str(path)})
    with pytest.raises(HvdError) as error:
        train(config, catalog=tiny_catalog)
    assert str(error.value).startswith(f"{path}: refused to load: it holds Python objects other than tensors")
    assert not marker.exists() and not (tmp_path / "run" / "checkpoint.pt").exists()


def test_code_in_the_run_checkpoint_is_refused_on_resume(tiny_catalog, tmp_path):
    """A run folder whose checkpoint.pt would run code when ``--resume`` reads it."""
    from pipeline.errors import HvdError
    from tests.unsafe_pickle import malicious_checkpoint

    marker = tmp_path / "marker"
    path = malicious_checkpoint(tmp_path / "run" / "checkpoint.pt", marker, step=1, optimizer={}, scheduler={}, scaler={}, epoch=0, batch_in_epoch=1, rng=[])
    before = path.read_bytes()
    with pytest.raises(HvdError) as error:
        train(_config(tiny_catalog, tmp_path / "run", run={"max_steps": 1}, data={"max_examples": 2}), catalog=tiny_catalog, resume=True)
    assert str(error.value).startswith(f"{path}: refused to load") and not marker.exists()
    assert path.read_bytes() == before  # refused, not overwritten by a fresh run


def test_nan_loss_stops_finetuning_and_keeps_the_last_checkpoint(tiny_catalog, tmp_path, monkeypatch):
    """The Lovasz term turns NaN at step 2: the error names the step, the term and the keyframe of
    the batch; checkpoint.pt stays the one of step 1, and a resumed run trains on from it. (A quarter
    of the network's width: the check is the loop's, not the network's.)"""
    import hashlib

    from pipeline.errors import HvdError
    from pipeline.train import finetune
    from pipeline.train.seg_data import seg_collate

    batches, loss = [], finetune.segmentation_loss

    def collate(examples):
        batches.append(seg_collate(examples)["tokens"])
        return seg_collate(examples)

    def nan_lovasz_at_step_2(logits, labels, lovasz=True):
        parts = loss(logits, labels, lovasz)
        if len(batches) == 2:
            parts["lovasz"] = parts["lovasz"] * float("nan")
        return parts

    monkeypatch.setattr(finetune, "seg_collate", collate)
    monkeypatch.setattr(finetune, "segmentation_loss", nan_lovasz_at_step_2)
    config = _config(tiny_catalog, tmp_path / "run", run={"max_steps": 3, "checkpoint_every": 1}, data={"max_examples": 2, "batch_size": 1}, model={"width": 0.25})
    with pytest.raises(HvdError) as error:
        train(config, catalog=tiny_catalog)
    assert str(error.value).startswith(f"step 2: non-finite loss lovasz=nan, total=nan on sample {batches[1][0]};"), str(error.value)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=True)
    assert state["step"] == 1 and "keeps step 1" in str(error.value)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    # resuming from the kept checkpoint without the fault trains on to the end
    monkeypatch.setattr(finetune, "segmentation_loss", loss)
    assert train(config, catalog=tiny_catalog, resume=True)["steps"] == 3
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() != digest
