"""Scene splits. Real nuScenes: the official ``train`` scenes minus SLidR's 100 "parametrize"
scenes for pretraining, those 100 for pretraining validation. Synthetic data: a seeded shuffle."""

from __future__ import annotations

import numpy as np

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


def official_splits(version: str) -> dict[str, str]:
    """scene name -> official split ('train', 'val', 'test', 'mini_train', 'mini_val') of nuScenes."""
    from nuscenes.utils.splits import create_splits_scenes

    splits = create_splits_scenes(verbose=False)
    wanted = {"v1.0-trainval": ("train", "val"), "v1.0-test": ("test",), "v1.0-mini": ("mini_train", "mini_val")}
    return {scene: name for name in wanted.get(version, ()) for scene in splits[name]}


def slidr_split(scene_names: list[str], version: str) -> dict[str, tuple[str, str]]:
    """scene -> (pretraining split, official split). Pretraining uses official train scenes only:
    'train' for 600 of them, 'val' for the 100 parametrize scenes, '' for everything else."""
    official = official_splits(version)
    out = {}
    for name in scene_names:
        split = official.get(name, "")
        if split in ("train", "mini_train"):
            out[name] = ("val" if name in SLIDR_PARAMETRIZE else "train", split)
        else:
            out[name] = ("", split)
    return out


def seeded_split(scene_names: list[str], val_fraction: float, seed: int) -> dict[str, tuple[str, str]]:
    """scene -> (split, split): a seeded shuffle puts ``val_fraction`` of the scenes (at least one,
    when there are two or more) in 'val' and the rest in 'train'."""
    names = sorted(scene_names)
    n_val = 0 if len(names) < 2 else max(1, int(round(val_fraction * len(names))))
    order = np.random.default_rng(seed).permutation(len(names))
    val = {names[i] for i in order[:n_val]}
    return {name: (("val",) * 2 if name in val else ("train",) * 2) for name in names}
