"""Scene splits: SLidR's pretraining split, the devkit's own splits of the synthetic scene names, the
seeded split's stability, and SLidR's label-fraction counting."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.data.splits import (
    SLIDR_PARAMETRIZE,
    seeded_split,
    slidr_label_fraction,
    slidr_split,
    split_scenes,
    synthetic_scene_names,
)
from pipeline.errors import StoreError


def devkit_splits():
    from nuscenes.utils.splits import create_splits_scenes

    return create_splits_scenes(verbose=False)


def test_slidr_split_holds_out_the_parametrize_scenes():
    official = devkit_splits()
    names = official["train"] + official["val"]
    split = slidr_split(names, "v1.0-trainval")
    pretrain = [n for n in names if split[n][0] == "train"]
    held = [n for n in names if split[n][0] == "val"]
    assert len(pretrain) == 600 and set(held) == SLIDR_PARAMETRIZE
    assert all(split[n] == ("", "val") for n in official["val"])


@pytest.mark.parametrize("preset", ["tiny", "demo", "transfer", "mini"])
def test_the_devkit_places_every_synthetic_scene(preset):
    """The generator's scene names (from the world it renders) are all in the devkit's
    ``create_splits_scenes()`` for the preset's version, and the 4-scene demo holds the whole of
    mini_val, so the devkit's evaluator finds every scene of its split."""
    from pipeline.synth import PRESETS
    from pipeline.synth.world import build_world

    spec = PRESETS[preset]
    names = [scene.name for scene in build_world(spec, seed=0).scenes]
    official = devkit_splits()
    placed = {name: split for split in ("mini_train", "mini_val") for name in official[split]}
    assert spec.version == "v1.0-mini" and len(set(names)) == spec.n_scenes
    assert all(name in placed for name in names), names
    assert {placed[n] for n in names} == {"mini_train", "mini_val"}
    if spec.n_scenes >= 4:
        assert set(official["mini_val"]) <= set(names)


def test_the_generated_tables_use_the_devkit_names(tiny_root):
    scenes = json.loads((tiny_root / "v1.0-mini" / "scene.json").read_text())
    official = devkit_splits()
    assert [s["name"] for s in scenes] == ["scene-0061", "scene-0103"]
    assert scenes[0]["name"] in official["mini_train"] and scenes[1]["name"] in official["mini_val"]


def test_larger_synthetic_sets_take_train_and_val_names_and_grow_by_prefix():
    official = devkit_splits()
    names = synthetic_scene_names("v1.0-trainval", 40)
    assert len(set(names)) == 40 and set(names) <= set(official["train"]) | set(official["val"])
    assert sum(n in official["val"] for n in names) == 8  # every fifth
    assert synthetic_scene_names("v1.0-trainval", 12) == names[:12]
    assert synthetic_scene_names("v1.0-mini", 10)[:3] == synthetic_scene_names("v1.0-mini", 3)
    with pytest.raises(ValueError, match="v1.0-mini has 10 scenes"):
        synthetic_scene_names("v1.0-mini", 11)


def test_split_kinds_name_where_a_split_comes_from():
    names = synthetic_scene_names("v1.0-mini", 4)  # 0061, 0103 (mini_val), 0553, 0916 (mini_val)
    official = split_scenes("official", names, "v1.0-mini")
    assert official == {"scene-0061": ("train", "mini_train"), "scene-0103": ("val", "mini_val"), "scene-0553": ("train", "mini_train"), "scene-0916": ("val", "mini_val")}
    seeded = split_scenes("seeded", names, "v1.0-mini", 0.25, 0)
    assert {v[1] for v in seeded.values()} == {"mini_train", "mini_val"}  # the official column stays the devkit's
    custom = seeded_split(["a", "b", "c"], 0.25, 0)
    assert all(official_ == "" for _, official_ in custom.values())  # unknown scenes: never official


def test_seeded_split_is_per_scene_and_stable_when_the_dataset_grows():
    names = [f"street-{i:03d}" for i in range(200)]
    whole = seeded_split(names, 0.25, 0)
    assert seeded_split(list(reversed(names)), 0.25, 0) == whole
    assert 0.15 < np.mean([v[0] == "val" for v in whole.values()]) < 0.35
    part = seeded_split(names[:120], 0.25, 0)
    assert all(part[n] == whole[n] for n in part)  # adding scenes moves none of the others
    assert seeded_split(names, 0.25, 1) != whole
    two = seeded_split(["x", "y"], 0.01, 0)
    assert sorted(v[0] for v in two.values()) == ["train", "val"]  # at least one validation scene


def slidr_counting(table: list[str], split: set[str], k: int) -> list[str]:
    """SLidR's downstream loop, written as a filter: the split's scenes in nusc.scene order, numbered
    from 1, keeping those whose number is a multiple of the skip ratio."""
    in_split = [scene for scene in table if scene in split]
    return [scene for number, scene in enumerate(in_split, start=1) if number % k == 0]


@pytest.mark.parametrize("fraction, k", [(0.01, 100), (0.05, 20), (0.1, 10), (0.25, 4), (1.0, 1)])
def test_label_fractions_count_as_slidr_does(fraction, k):
    """A scene table in an order of its own (not by name), with the val scenes interleaved: the kept
    scenes equal SLidR's counting, and (unlike every-k-th-by-name from the first) the first
    training scene is kept only at 100 %."""
    official = devkit_splits()
    table = official["train"] + official["val"]
    np.random.default_rng(7).shuffle(table)
    train = set(official["train"])
    kept = slidr_label_fraction(table, train, fraction)
    assert kept == slidr_counting(table, train, k)
    assert len(kept) == 700 // k
    first = next(n for n in table if n in train)
    assert (first in kept) == (k == 1)


def fake_index(table: list[str], official: dict[str, str], keyframes: int = 2):
    scenes = sorted(table)  # index rows follow scene names, the table order lives in the meta
    scene = np.repeat(scenes, keyframes)
    columns = {"scene": scene, "official_split": np.array([official[s] for s in scene])}
    return SimpleNamespace(
        column=columns.__getitem__,
        splits=np.array(["train"] * len(scene)),
        meta=SimpleNamespace(extra={"scene_table": table, "split_kind": "seeded"}),
        path="fake/index.parquet",
    )


def test_select_rows_keeps_slidr_scenes_and_says_when_none_are_left():
    from pipeline.train.seg_data import downstream_splits, select_rows

    train, val = [f"scene-{i:04d}" for i in range(1, 10)], ["scene-0100", "scene-0200"]
    table = ["scene-0007", "scene-0100", "scene-0002", "scene-0009", "scene-0001", "scene-0200", "scene-0005", "scene-0003", "scene-0008", "scene-0004", "scene-0006"]
    index = fake_index(table, {**{s: "train" for s in train}, **{s: "val" for s in val}})
    rows, scenes = select_rows(index, "train", 0.34)  # k = 3: the 3rd, 6th, 9th training scenes of the table
    assert scenes == slidr_counting(table, set(train), 3) == ["scene-0009", "scene-0003", "scene-0006"]
    assert sorted(set(index.column("scene")[rows])) == sorted(scenes) and len(rows) == 6
    rows, scenes = select_rows(index, "val")
    assert scenes == ["scene-0100", "scene-0200"] and len(rows) == 4
    assert downstream_splits(index)[1] == "official"
    with pytest.raises(StoreError, match=r"every 10th of the 9 official training scenes .* none"):
        select_rows(index, "train", 0.1)


def test_scenes_unknown_to_the_devkit_fall_back_to_the_named_seeded_split():
    from pipeline.train.seg_data import downstream_splits

    index = fake_index(["a", "b"], {"a": "", "b": ""})
    index.splits = np.array(["train", "train", "val", "val"])
    which, source = downstream_splits(index)
    assert source == "seeded" and which.tolist() == ["train", "train", "val", "val"]
