"""The pretraining dataset: one example per keyframe, read from the index and the stores only (the
LiDAR sweep itself, never an image, never the teacher), augmented in feature space.

``open_stores`` recomputes the fingerprints the catalog implies and refuses a missing, stale or
incomplete store, naming the ``hvd prep`` command that builds it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from pipeline.data.sensor_data import in_range, load_points
from pipeline.errors import CatalogError, StoreError
from pipeline.stages import correspondences, depth_targets, teacher_cache
from pipeline.store.rowstore import RowStore, done_value
from pipeline.store.runner import row_hashes
from pipeline.store.stores import read_meta
from pipeline.train import augment
from pipeline.train.augment import AugmentConfig
from pipeline.train.voxelize import InputSettings, student_input

STORES = ("superpixels", "correspondences", "depth_targets", "teacher_cache")
N_CAMERAS = 6


class DataConfig(BaseModel):
    """Where examples come from and how they are augmented."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    catalog: str = "data_catalog.yaml"
    source: str | None = None
    split: str = "train"
    max_examples: int | None = Field(None, ge=1, description="use only the split's first N keyframes (overfitting checks)")
    batch_size: int = Field(4, ge=1)
    num_workers: int = Field(2, ge=0)
    augment: AugmentConfig = AugmentConfig()


@dataclass
class Stores:
    """The index and the opened stores of one source, checked against the catalog."""

    index: object
    artifacts: dict  # name -> pipeline.store.catalog.Artifact
    paths: dict[str, str]

    def open(self) -> dict[str, RowStore]:
        return {name: RowStore.open(path) for name, path in self.paths.items()}


def open_stores(catalog, source: str | None = None, rows: list[int] | None = None) -> Stores:
    """Check that every store training reads exists, matches the catalog's fingerprint and covers
    every keyframe of the index (or just index ``rows``: ``hvd show`` needs only its keyframe's);
    otherwise say which ``hvd prep`` command builds it."""
    from pipeline.stages.index import ensure_index

    index, _ = ensure_index(catalog, source)
    artifacts, paths = {}, {}
    for name in STORES:
        artifact = catalog.artifact(name, source)
        command = f"hvd prep {artifact.stage.name.replace('_', '-')} --source {artifact.source.name}"
        meta = read_meta(artifact.path)
        if meta is None:
            raise StoreError(f"the {name} store {artifact.path} does not exist: run `{command}` (or `hvd prep all`)")
        if meta.fingerprint != artifact.fingerprint:
            raise StoreError(f"the {name} store {artifact.path} is stale (fingerprint {meta.fingerprint[:12]}, the catalog implies {artifact.fingerprint[:12]}): run `{command}`")
        store = RowStore.open(artifact.path)
        _check_rows(name, artifact.path, store, index, row_hashes(catalog.stages.module(artifact.stage.name), artifact.params, index), command, rows)
        artifacts[name], paths[name] = artifact, artifact.path
    depth = artifacts["depth_targets"].params
    from models.frustum import DEPTH_MAX_M, DEPTH_MIN_M

    if (depth.min_depth_m, depth.max_depth_m) != (DEPTH_MIN_M, DEPTH_MAX_M):
        raise CatalogError(
            f"depth_targets keeps depths in [{depth.min_depth_m}, {depth.max_depth_m}) m but the depth bins span "
            f"[{DEPTH_MIN_M}, {DEPTH_MAX_M}) m (models/frustum.py): a cell's minimum must be taken over the binned "
            "range only; set the catalog's depth_targets min_depth_m / max_depth_m to the bins' and rebuild it"
        )
    return Stores(index, artifacts, paths)


def _check_rows(name: str, path: str, store: RowStore, index, hashes: list[str], command: str, rows: list[int] | None = None) -> None:
    """Every keyframe of the index (or of its ``rows``) is done in ``store`` for its current content;
    otherwise say which rows are refused by the index, which were never computed and which are stale
    (computed from input files that changed since), by sample token, and what to run."""
    problems = dict(zip(index.tokens, index.column("problem")))
    refused, missing, stale = [], [], []
    done = store.done()  # read once: a lookup per row would read a chunk per row
    checked = range(len(index.tokens)) if rows is None else rows
    for token, row_hash in ((index.tokens[r], hashes[r]) for r in checked):
        row = store.row_of(token)
        if row is not None and done[row] == done_value(row_hash):
            continue
        if problems[token]:
            refused.append(f"sample {token}: {problems[token]}")
        elif row is None or done[row] == 0:
            missing.append(token)
        else:
            stale.append(token)
    if refused:
        raise StoreError(
            f"{len(refused)} keyframe(s) of the index are refused and have no {name} row:\n  " + "\n  ".join(refused[:10])
            + "\nFix the dataset's tables, or set `params: {index: {allow_missing: true}}` on the source to leave them out."
        )
    if stale:
        raise StoreError(
            f"the {name} store {path} holds {len(stale)} stale row(s): their input files changed since they were computed "
            f"(e.g. sample {stale[0]}): run `{command}` to recompute just those"
        )
    if missing:
        raise StoreError(f"the {name} store {path} lacks {len(missing)} of {len(checked)} keyframes (e.g. sample {missing[0]}): run `{command}`")


class PretrainDataset(torch.utils.data.Dataset):
    """Examples of one split; the augmentation of example ``i`` in epoch ``e`` is a pure function of
    (seed, e, i), so a resumed run sees exactly the data an uninterrupted one would."""

    def __init__(self, stores: Stores, config: DataConfig, *, seed: int = 0, input: InputSettings = InputSettings()) -> None:
        self.stores = stores
        self.input = input  # the student's input convention (model.input)
        self.rows = stores.index.rows(config.split)[: config.max_examples]
        if not len(self.rows):
            raise StoreError(f"split {config.split!r} of the index has no keyframes")
        self.augment = config.augment
        self.seed = seed
        self.epoch = 0
        self.teacher = stores.artifacts["teacher_cache"].params
        self.out_hw = tuple(self.teacher.input_size)
        self.stride = self.teacher.output_stride
        self._open: dict[str, RowStore] | None = None  # opened lazily, once per DataLoader worker

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        stores = self._open = self._open or self.stores.open()
        record = self.stores.index.record(int(self.rows[i]))
        rng = np.random.default_rng([self.seed, self.epoch, int(self.rows[i])])
        train = self.augment.enabled

        # 1. the cloud in range, and its pairings (original pixels)
        points = load_points(record["lidar_path"])
        keep_range = in_range(points)
        xyz, intensity = points[keep_range, :3].astype(np.float64), points[keep_range, 3]
        pair_store = stores["correspondences"]
        n_in_range, cams = correspondences.read(pair_store, pair_store.row_of(record["token"]))
        if n_in_range != len(xyz):
            command = f"hvd prep correspondences --source {self.stores.artifacts['correspondences'].source.name}"
            raise StoreError(
                f"sample {record['token']}: {record['lidar_path']} has {len(xyz)} points in range but its correspondences row was "
                f"computed from {n_in_range}: the file changed after `hvd prep` ran; run `{command}` to recompute that row"
            )

        # 2. cloud transforms, then drop a cuboid unless a camera would lose too many pairings
        lidar_aug = augment.sample_lidar_matrix(self.augment, rng) if train else np.eye(4)
        xyz = xyz @ lidar_aug[:3, :3].T + lidar_aug[:3, 3]
        keep = augment.drop_cuboid(xyz, lambda k: np.array([k[idx].sum() for idx, _, _ in cams]), self.augment, rng) if train else np.ones(len(xyz), bool)
        new_index = np.cumsum(keep) - 1
        xyz, intensity = xyz[keep], intensity[keep]

        # 3. per camera: image matrix, pairings, features, superpixels, depth targets
        sp_store, tc_store = stores["superpixels"], stores["teacher_cache"]
        sp_row, tc_row = sp_store.row_of(record["token"]), tc_store.row_of(record["token"])
        labels, features = sp_store.read("labels", sp_row), None
        depth_points = depth_targets.read(stores["depth_targets"], stores["depth_targets"].row_of(record["token"]))  # per camera (uv, depth)
        out = {k: [] for k in ("img_aug", "pair_point", "pair_cam", "pair_uv", "pair_pixel", "pair_depth", "features", "superpixels", "sp_count", "depth_target")}
        for c, (idx, uv, depth) in enumerate(cams):
            alive = keep[idx]
            idx, uv, depth = new_index[idx[alive]], uv[alive].astype(np.float64), depth[alive]
            image_hw = tuple(record["image_hw"][c])
            a = augment.sample_crop(image_hw, self.out_hw, uv, self.augment, rng) if train else augment.full_image_matrix(image_hw, self.out_hw)
            uv_aug = augment.apply_image_matrix(a, uv)
            ok = augment.inside(uv_aug, self.out_hw)
            feats = teacher_cache.read(tc_store, tc_row, c, self.teacher)
            grid = augment.sample_grid(a, image_hw, self.out_hw, stride=self.stride)
            sp, count = augment.resample_labels(labels[c], augment.sample_grid(a, image_hw, self.out_hw))
            target_uv, target_depth = depth_points[c]  # (M, 2) original pixels, (M,): every point at 1-60 m
            target = depth_targets.min_depth_grid(augment.apply_image_matrix(a, target_uv.astype(np.float64)), target_depth, self.out_hw, self.stride)
            out["img_aug"].append(a)
            out["pair_point"].append(idx[ok])
            out["pair_cam"].append(np.full(ok.sum(), c))
            out["pair_uv"].append(uv_aug[ok])
            out["pair_pixel"].append(np.round(uv_aug[ok][:, ::-1]).astype(np.int64))  # (row, col), rounded in float64
            out["pair_depth"].append(depth[ok])
            out["features"].append(augment.resample_features(feats, grid))
            out["superpixels"].append(sp)
            out["sp_count"].append(count)
            out["depth_target"].append(target)

        # 4. voxels of the augmented cloud (one representative point each) and their features
        voxels, feats = student_input(xyz.astype(np.float32), intensity, self.input)
        from models.frustum import cam_to_lidar_aug

        return {
            "token": record["token"],
            "points": xyz.astype(np.float32),
            "coords": voxels.coords,
            "feats": feats,
            "inverse": voxels.inverse,
            "pair_point": np.concatenate(out["pair_point"]).astype(np.int64),
            "pair_cam": np.concatenate(out["pair_cam"]).astype(np.int64),
            "pair_uv": np.concatenate(out["pair_uv"]).astype(np.float32),
            "pair_pixel": np.concatenate(out["pair_pixel"]),
            "pair_depth": np.concatenate(out["pair_depth"]).astype(np.float32),
            "features": np.stack(out["features"]),
            "superpixels": np.stack(out["superpixels"]),
            "sp_count": np.array(out["sp_count"], dtype=np.int64),
            "depth_target": np.stack(out["depth_target"]),
            "img_aug": np.stack(out["img_aug"]),
            "lidar_aug": lidar_aug,
            "intrinsics": record["intrinsics"],
            "cam_to_ego": record["cam_to_ego"],
            "cam_to_lidar": cam_to_lidar_aug(lidar_aug, record["lidar_to_ego"], record["ego_to_global_lidar"], record["ego_to_global_cam"], record["cam_to_ego"]),
        }


def collate(examples: list[dict]) -> dict:
    """A batch: points and voxels concatenated with their example index, pairings re-indexed into
    the concatenation, images stacked example-major (image = example * 6 + camera)."""
    batch: dict = {"tokens": [e["token"] for e in examples], "size": len(examples)}
    point_offsets = np.cumsum([0] + [len(e["points"]) for e in examples])
    voxel_offsets = np.cumsum([0] + [len(e["coords"]) for e in examples])
    batch["coords"] = [torch.from_numpy(e["coords"]) for e in examples]
    batch["feats"] = [torch.from_numpy(e["feats"]) for e in examples]
    batch["inverse"] = torch.from_numpy(np.concatenate([e["inverse"] + voxel_offsets[b] for b, e in enumerate(examples)]))
    batch["points"] = torch.from_numpy(np.concatenate([e["points"] for e in examples]))
    batch["pair_point"] = torch.from_numpy(np.concatenate([e["pair_point"] + point_offsets[b] for b, e in enumerate(examples)]))
    batch["pair_image"] = torch.from_numpy(np.concatenate([e["pair_cam"] + N_CAMERAS * b for b, e in enumerate(examples)]))
    batch["pair_pixel"] = torch.from_numpy(np.concatenate([e["pair_pixel"] for e in examples]))  # (row, col)
    batch["pair_depth"] = torch.from_numpy(np.concatenate([e["pair_depth"] for e in examples]))
    for key in ("features", "superpixels", "sp_count", "depth_target", "img_aug", "intrinsics", "cam_to_ego", "cam_to_lidar"):
        batch[key] = torch.from_numpy(np.concatenate([np.asarray(e[key]) for e in examples]))
    batch["lidar_aug"] = torch.from_numpy(np.stack([e["lidar_aug"] for e in examples]))
    batch["image_batch"] = torch.arange(len(examples)).repeat_interleave(N_CAMERAS)
    return batch
