"""``hvd eval --export``: predictions in the nuScenes-lidarseg submission layout, scored by the
devkit's own ``LidarSegEval`` and checked by its ``validate_submission``: the devkit's mIoU equals
hvd's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import HvdError
from pipeline.stages import Catalog
from pipeline.train import finetune_config
from pipeline.train.evaluate import evaluate
from pipeline.train.finetune import train
from tests.conftest import catalog_for

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def four_scenes(tiny_root, tmp_path_factory) -> Path:
    """The tiny dataset grown to 4 scenes (only the 2 new ones are rendered): scene-0061 and
    scene-0553 (mini_train), scene-0103 and scene-0916 -- all of the devkit's mini_val."""
    import shutil

    from pipeline.synth import PRESETS
    from pipeline.synth.generate import generate

    root = tmp_path_factory.mktemp("four") / "tiny4"
    shutil.copytree(tiny_root, root)
    generate(root, replace(PRESETS["tiny"], n_scenes=4), seed=0, workers=2)
    return root


@pytest.fixture(scope="module")
def finetuned(four_scenes, tmp_path_factory) -> tuple[Catalog, Path]:
    base = tmp_path_factory.mktemp("export")
    catalog = Catalog.load(catalog_for(base, four_scenes))
    config = finetune_config.build(None, None, {
        "data": {"catalog": str(catalog.path), "source": "tiny", "batch_size": 2, "num_workers": 0, "augment": False},
        "model": {"bn_momentum": 0.3},
        "optim": {"lr": 0.05, "head_lr": 0.5, "epochs": 100},
        "run": {"out_dir": str(base / "run"), "max_steps": 4, "checkpoint_every": 100},
    })
    train(config, catalog=catalog)
    return catalog, base / "run"


def test_the_devkit_scores_the_export_as_hvd_does(finetuned, four_scenes, tmp_path):
    from nuscenes import NuScenes
    from nuscenes.eval.lidarseg.evaluate import LidarSegEval
    from nuscenes.eval.lidarseg.validate_submission import validate_submission

    catalog, run = finetuned
    out = tmp_path / "submission"
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "cli.main", "eval", str(run), "--export", str(out), "--workers", "0"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "submission: 8 keyframes of mini_val" in done.stdout + done.stderr
    ours = json.loads((run / "eval-val.json").read_text())
    assert ours["split_source"] == "official" and ours["scenes"] == ["scene-0103", "scene-0916"]

    nusc = NuScenes(version="v1.0-mini", dataroot=str(four_scenes), verbose=False)
    bins = sorted((out / "lidarseg" / "mini_val").iterdir())
    assert len(bins) == 8 and json.loads((out / "mini_val" / "submission.json").read_text())["meta"]["use_lidar"] is True
    for path in bins:  # one uint8 class per point of the sweep, in file order
        record = nusc.get("sample_data", path.name.removesuffix("_lidarseg.bin"))
        n_points = os.path.getsize(four_scenes / record["filename"]) // (5 * 4)
        pred = np.fromfile(path, dtype=np.uint8)
        assert len(pred) == n_points and pred.min() >= 1 and pred.max() <= 16
    validate_submission(nusc, str(out), "mini_val", verbose=False, zip_out=None)
    theirs = LidarSegEval(nusc, str(out), eval_set="mini_val").evaluate()
    assert abs(theirs["miou"] - ours["miou"]) < 0.01, (theirs["miou"], ours["miou"])
    assert abs(theirs["miou"] - ours["miou"]) < 1e-6  # same convention: the same number up to float32
    for name, value in ours["iou"].items():
        theirs_value = theirs["iou_per_class"][name]
        assert (value is None and np.isnan(theirs_value)) or abs(value - theirs_value) < 1e-6, name


def test_an_export_the_devkit_could_not_score_is_refused(finetuned, tiny_root, tmp_path):
    catalog, run = finetuned
    with pytest.raises(HvdError, match="drop --max-examples"):
        evaluate(run, catalog=catalog, max_examples=2, num_workers=0, export=tmp_path / "a")
    two = Catalog.load(catalog_for(tmp_path / "two", tiny_root))  # the plain tiny set: scene-0916 missing
    with pytest.raises(HvdError, match=r"every scene of mini_val, and 1 of them is not in .*scene-0916"):
        evaluate(run, catalog=two, num_workers=0, export=tmp_path / "b")
    assert not (tmp_path / "b" / "mini_val" / "submission.json").exists()
