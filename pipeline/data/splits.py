"""Scene splits, and where each comes from.

Every index row records two splits of its scene:

- ``official_split``: where the nuScenes devkit's own ``create_splits_scenes()`` places the scene
  ('train', 'val', 'test', 'mini_train', 'mini_val'), or '' for a scene it does not know. Fine-tuning
  and evaluation use it, as SLidR does. Nothing else is ever called official.
- ``split``: the pretraining split ('train', 'val' or '' for unused), by the source's split kind:
  ``official``: the devkit's train scenes train, its val scenes validate;
  ``slidr``: the official train scenes minus SLidR's 100 "parametrize" scenes train, those 100
  validate (nuScenes v1.0-trainval, the paper's setting);
  ``seeded``: a seeded random draw over the scene names, for datasets whose scenes the devkit does
  not know.

The synthetic generator names its scenes from the devkit's lists (``synthetic_scene_names``), so the
devkit, its evaluator and every split kind work on synthetic data as on the real dataset.
"""

from __future__ import annotations

import hashlib
from functools import cache

# The 100 training scenes SLidR (and HVDistill after it) hold out to validate pretraining.
SLIDR_PARAMETRIZE: frozenset[str] = frozenset(
    f"scene-{n:04d}"
    for n in (
        8, 9, 19, 29, 32, 42, 45, 49, 52, 54, 56, 66, 67, 73, 131, 152, 166, 168, 183, 190,
        194, 208, 210, 211, 241, 243, 248, 259, 260, 261, 287, 292, 297, 305, 306, 350, 352, 358, 361, 365,
        368, 377, 388, 391, 395, 413, 427, 428, 438, 444, 452, 453, 459, 463, 464, 475, 513, 533, 544, 575,
        587, 589, 642, 652, 658, 669, 678, 687, 701, 703, 706, 710, 715, 726, 735, 740, 758, 786, 790, 804,
        806, 847, 856, 868, 882, 897, 899, 976, 996, 1012, 1015, 1016, 1018, 1020, 1024, 1044, 1058, 1094, 1098, 1107,
    )
)

# The devkit's split names of each version, (training, validation, ...).
VERSION_SPLITS: dict[str, tuple[str, ...]] = {
    "v1.0-trainval": ("train", "val"),
    "v1.0-test": ("test",),
    "v1.0-mini": ("mini_train", "mini_val"),
}
TRAIN_SPLITS = ("train", "mini_train")  # official splits fine-tuning trains on
VAL_SPLITS = ("val", "mini_val")  # official splits evaluation scores


@cache
def _devkit_splits() -> dict[str, tuple[str, ...]]:
    from nuscenes.utils.splits import create_splits_scenes

    return {name: tuple(scenes) for name, scenes in create_splits_scenes(verbose=False).items()}


def official_splits(version: str) -> dict[str, str]:
    """scene name -> official split of the devkit for ``version`` (its scenes only)."""
    splits = _devkit_splits()
    return {scene: name for name in VERSION_SPLITS.get(version, ()) for scene in splits[name]}


def official_scenes(split: str) -> tuple[str, ...]:
    """The scene names the devkit lists for an official split, in its order."""
    return _devkit_splits()[split]


def synthetic_scene_names(version: str, n_scenes: int) -> list[str]:
    """Names for the scenes of a synthetic dataset, taken from the devkit's own split lists so that
    ``create_splits_scenes()`` places every one of them: for v1.0-mini, mini_train and mini_val
    names alternate until mini_val's two are used (a 2-scene set has one of each, a 4-scene set all
    of mini_val, so the devkit's evaluator finds its whole split); for v1.0-trainval, every fifth
    scene takes a val name (about the official 700 : 150). The first n names never change with n,
    so a dataset grown by more scenes keeps its names."""
    if n_scenes < 0:
        raise ValueError(f"n_scenes must be >= 0, got {n_scenes}")
    if version not in ("v1.0-mini", "v1.0-trainval"):
        raise ValueError(f"synthetic datasets are v1.0-mini or v1.0-trainval, not {version!r}")
    train_name, val_name = VERSION_SPLITS[version]
    train, val = list(official_scenes(train_name)), list(official_scenes(val_name))
    if n_scenes > len(train) + len(val):
        raise ValueError(f"{version} has {len(train) + len(val)} scenes ({train_name} + {val_name}); {n_scenes} synthetic scenes need v1.0-trainval")
    names = []
    for i in range(n_scenes):
        takes_val = (i % 2 == 1) if version == "v1.0-mini" else (i % 5 == 1)
        names.append(val.pop(0) if (takes_val and val) or not train else train.pop(0))
    return names


def official_pretraining_split(scene_names: list[str], version: str) -> dict[str, tuple[str, str]]:
    """scene -> (pretraining split, official split), kind ``official``: the devkit's training
    scenes train, its validation scenes validate, anything else ('test', unknown) is unused."""
    official = official_splits(version)
    out = {}
    for name in scene_names:
        split = official.get(name, "")
        out[name] = ("train" if split in TRAIN_SPLITS else "val" if split in VAL_SPLITS else "", split)
    return out


def slidr_split(scene_names: list[str], version: str) -> dict[str, tuple[str, str]]:
    """scene -> (pretraining split, official split), kind ``slidr``: pretraining uses official train
    scenes only: 'train' for 600 of them, 'val' for the 100 parametrize scenes, '' for the rest."""
    official = official_splits(version)
    out = {}
    for name in scene_names:
        split = official.get(name, "")
        if split in TRAIN_SPLITS:
            out[name] = ("val" if name in SLIDR_PARAMETRIZE else "train", split)
        else:
            out[name] = ("", split)
    return out


def _draw(name: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by (seed, scene name) alone."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def seeded_split(scene_names: list[str], val_fraction: float, seed: int, version: str = "") -> dict[str, tuple[str, str]]:
    """scene -> (pretraining split, official split), kind ``seeded``: a scene validates when its
    own seeded draw is below ``val_fraction``, so its split depends on its name and the seed only:
    adding or removing other scenes never moves it. When no scene draws below (small datasets, two
    or more scenes), the one with the lowest draw validates."""
    official = official_splits(version)
    draws = {name: _draw(name, seed) for name in scene_names}
    val = {name for name, u in draws.items() if u < val_fraction}
    if not val and len(draws) >= 2:
        val = {min(draws, key=lambda n: (draws[n], n))}
    return {name: ("val" if name in val else "train", official.get(name, "")) for name in scene_names}


def split_scenes(kind: str, scene_names: list[str], version: str, val_fraction: float = 0.25, seed: int = 0) -> dict[str, tuple[str, str]]:
    """scene -> (pretraining split, official split) for a source's split kind."""
    if kind == "official":
        return official_pretraining_split(scene_names, version)
    if kind == "slidr":
        return slidr_split(scene_names, version)
    if kind == "seeded":
        return seeded_split(scene_names, val_fraction, seed, version)
    raise ValueError(f"unknown split kind {kind!r} (official, slidr or seeded)")


def label_fraction_step(label_fraction: float) -> int:
    """k of 'keep every k-th scene' for a label fraction: 1 % -> 100, 5 % -> 20, 10 % -> 10, 25 % -> 4."""
    return max(1, int(round(1.0 / label_fraction)))


def slidr_label_fraction(scene_table: list[str], split_scenes_: set[str] | frozenset[str], label_fraction: float) -> list[str]:
    """The scenes a label fraction keeps, counted exactly as SLidR counts (docs/METHOD.md section 8):
    walk the scene table (``nusc.scene``) in its order, count the scenes that belong to the split,
    keep a scene when its count is a multiple of k -- the k-th, 2k-th, ... So 1 % of the 700
    official training scenes is 7 scenes, the 100th, 200th, ..., and fewer than k scenes keep none."""
    k = label_fraction_step(label_fraction)
    kept, count = [], 0
    for name in scene_table:
        if name in split_scenes_:
            count += 1
            if count % k == 0:
                kept.append(name)
    return kept
