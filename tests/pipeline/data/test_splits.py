"""Scene splits of real nuScenes: SLidR's pretraining split of the official train scenes."""

from __future__ import annotations

from pipeline.data.splits import SLIDR_PARAMETRIZE, slidr_split


def test_slidr_split_holds_out_the_parametrize_scenes():
    from nuscenes.utils.splits import create_splits_scenes

    official = create_splits_scenes(verbose=False)
    names = official["train"] + official["val"]
    split = slidr_split(names, "v1.0-trainval")
    pretrain = [n for n in names if split[n][0] == "train"]
    held = [n for n in names if split[n][0] == "val"]
    assert len(pretrain) == 600 and set(held) == SLIDR_PARAMETRIZE
    assert all(split[n] == ("", "val") for n in official["val"])
