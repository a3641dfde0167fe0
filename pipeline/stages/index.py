"""The sample index: one Parquet row per keyframe of a nuScenes-format dataset (real or synthetic),
with the paths, timestamps, calibration and ego poses every later stage reads instead of the
devkit, plus the scene split, and the ``MAX_SWEEPS`` LIDAR_TOP sweeps nearest in time to the
keyframe's (path, time, calibration, ego pose; for stages that accumulate sweeps).

Built through nuscenes-devkit; every file a row names is checked (present, not truncated) and each
problem is recorded by file and sample. Such keyframes stay in the index (the stages then fail just
those rows, until the file is fixed) unless ``allow_missing`` drops them. The index is rebuilt when
its fingerprint or the dataset's tables change, or while it records problems (``ensure_index``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict

from pipeline.data.source import CAMERAS, LIDAR
from pipeline.errors import SourceError
from pipeline.store.stage import StageInfo

VERSION = 2  # 2: the neighbouring LIDAR_TOP sweeps of each keyframe

MAX_REPORTED = 20
MAX_SWEEPS = 10  # neighbouring LiDAR sweeps indexed per keyframe (nuScenes: 20 Hz, so +-0.25 s)


class IndexParams(BaseModel):
    """How the index is built. ``allow_missing`` drops keyframes whose files are missing or
    truncated (recorded in the index) instead of refusing to build."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_missing: bool = False


STAGE = StageInfo(
    name="index",
    version=VERSION,
    params=IndexParams,
    suffix=".parquet",
    description="one row per keyframe: paths, timestamps, calibration, ego poses, split",
)


def _pose(record: dict) -> np.ndarray:
    from pipeline.data.geometry import rigid

    return rigid(np.asarray(record["rotation"], dtype=np.float64), record["translation"])


def _neighbour_sweeps(nusc, lidar: dict) -> dict[str, list]:
    """The ``MAX_SWEEPS`` LIDAR_TOP sample_data nearest in time to the keyframe's ``lidar`` record
    (itself excluded; keyframes of the same scene count, as in the devkit's multi-sweep reader),
    nearest first, the earlier first on ties. The prev/next chains are time-ordered, so walking
    ``MAX_SWEEPS`` steps each way finds them all; a keyframe with no chain has none."""
    found = []
    for direction in ("prev", "next"):
        token = lidar[direction]
        for _ in range(MAX_SWEEPS):
            if not token:
                break
            record = nusc.get("sample_data", token)
            found.append(record)
            token = record[direction]
    found = sorted(found, key=lambda sd: (abs(sd["timestamp"] - lidar["timestamp"]), sd["timestamp"]))[:MAX_SWEEPS]
    return {
        "sweep_paths": [sd["filename"] for sd in found],
        "sweep_timestamps": [sd["timestamp"] for sd in found],
        "sweep_lidar_to_ego": np.array([_pose(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])).ravel() for sd in found]).reshape(-1, 16),
        "sweep_ego_to_global": np.array([_pose(nusc.get("ego_pose", sd["ego_pose_token"])).ravel() for sd in found]).reshape(-1, 16),
    }


def _scene_splits(nusc, split) -> dict[str, tuple[str, str]]:
    from pipeline.data.splits import seeded_split, slidr_split

    names = [s["name"] for s in nusc.scene]
    if split.kind == "slidr":
        return slidr_split(names, nusc.version)
    return seeded_split(names, split.val_fraction, split.seed)


def build(source, params: IndexParams, on_progress: Callable[[int, int], None] | None = None):
    """(pyarrow table, problems) for ``source`` (a ``pipeline.store.catalog.Source``): one message
    per missing or truncated file, naming the sample; with ``allow_missing`` those keyframes are
    left out."""
    import pyarrow as pa

    from pipeline.data.source import check_image, check_lidar, open_nuscenes

    nusc = open_nuscenes(source.dataroot, source.version)
    root = Path(source.dataroot)
    has_lidarseg = hasattr(nusc, "lidarseg")
    splits = _scene_splits(nusc, source.split)
    rows: dict[str, list] = {k: [] for k in _COLUMNS}
    problems: list[str] = []
    scenes = sorted(nusc.scene, key=lambda s: s["name"])
    for done, scene in enumerate(scenes):
        token = scene["first_sample_token"]
        while token:
            sample = nusc.get("sample", token)
            token = sample["next"]
            try:
                lidar = nusc.get("sample_data", sample["data"][LIDAR])
                cams = [nusc.get("sample_data", sample["data"][c]) for c in CAMERAS]
            except KeyError as exc:
                problems.append(f"sample {sample['token']} ({scene['name']}): no {exc.args[0]} sample_data")
                continue
            lidarseg = nusc.get("lidarseg", lidar["token"])["filename"] if has_lidarseg else ""
            n_points, problem = check_lidar(root / lidar["filename"], root / lidarseg if lidarseg else None)
            bad = [problem] if problem else []
            bad += [p for p in (check_image(root / c["filename"]) for c in cams) if p]
            problems += [f"sample {sample['token']} ({scene['name']}): {p}" for p in bad]
            if bad and params.allow_missing:
                continue
            calib = [nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]) for sd in (lidar, *cams)]
            poses = [_pose(nusc.get("ego_pose", sd["ego_pose_token"])) for sd in (lidar, *cams)]
            split, official = splits[scene["name"]]
            values = {
                "sample_token": sample["token"],
                "scene": scene["name"],
                "scene_token": scene["token"],
                "split": split,
                "official_split": official,
                "timestamp": sample["timestamp"],
                "lidar_token": lidar["token"],
                "lidar_path": lidar["filename"],
                "lidar_timestamp": lidar["timestamp"],
                "lidar_points": n_points,
                "lidarseg_path": lidarseg,
                "lidar_to_ego": _pose(calib[0]).ravel(),
                "ego_to_global_lidar": poses[0].ravel(),
                "cam_tokens": [c["token"] for c in cams],
                "cam_paths": [c["filename"] for c in cams],
                "cam_timestamps": [c["timestamp"] for c in cams],
                "cam_to_ego": np.concatenate([_pose(c).ravel() for c in calib[1:]]),
                "ego_to_global_cam": np.concatenate([p.ravel() for p in poses[1:]]),
                "cam_intrinsics": np.concatenate([np.asarray(c["camera_intrinsic"], dtype=np.float64).ravel() for c in calib[1:]]),
                "cam_hw": [v for c in cams for v in (c["height"], c["width"])],
                **_neighbour_sweeps(nusc, lidar),
            }
            values["row_hash"] = _row_hash(values)
            for key, value in values.items():
                rows[key].append(value)
        if on_progress:
            on_progress(done + 1, len(scenes))
    return _to_table(pa, rows), problems


def problems_error(index: SampleIndex) -> SourceError | None:
    """The error ``hvd prep index`` reports for files found missing or truncated (None if none)."""
    problems = index.meta.extra.get("problems", [])
    if not problems or index.meta.params.get("allow_missing"):
        return None
    shown = "\n  ".join(problems[:MAX_REPORTED])
    more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
    return SourceError(
        f"{len(problems)} problem(s) in {index.dataroot}:\n  {shown}{more}\n"
        "Those keyframes are indexed but every stage will fail on them until the files are fixed or "
        "re-downloaded; or set `params: {index: {allow_missing: true}}` on the source in the catalog "
        "to leave them out."
    )


class Column(NamedTuple):
    """kind: "str", "i32", "i64" or "f64"; width: 0 = one value, else a fixed-size list of that
    many; per_sweep: a variable-length list of such entries, one per neighbouring sweep."""

    kind: str
    width: int = 0
    per_sweep: bool = False


_COLUMNS = {
    "sample_token": Column("str"),
    "scene": Column("str"),
    "scene_token": Column("str"),
    "split": Column("str"),
    "official_split": Column("str"),
    "timestamp": Column("i64"),
    "lidar_token": Column("str"),
    "lidar_path": Column("str"),
    "lidar_timestamp": Column("i64"),
    "lidar_points": Column("i32"),
    "lidarseg_path": Column("str"),
    "lidar_to_ego": Column("f64", 16),
    "ego_to_global_lidar": Column("f64", 16),
    "cam_tokens": Column("str", 6),
    "cam_paths": Column("str", 6),
    "cam_timestamps": Column("i64", 6),
    "cam_to_ego": Column("f64", 96),
    "ego_to_global_cam": Column("f64", 96),
    "cam_intrinsics": Column("f64", 54),
    "cam_hw": Column("i32", 12),
    "sweep_paths": Column("str", per_sweep=True),
    "sweep_timestamps": Column("i64", per_sweep=True),
    "sweep_lidar_to_ego": Column("f64", 16, per_sweep=True),
    "sweep_ego_to_global": Column("f64", 16, per_sweep=True),
    "row_hash": Column("str"),
}


def _to_table(pa, rows: dict[str, list]):
    types = {"str": pa.string(), "i32": pa.int32(), "i64": pa.int64(), "f64": pa.float64()}
    dtypes = {"i32": np.int32, "i64": np.int64, "f64": np.float64}
    arrays = {"row": pa.array(np.arange(len(rows["sample_token"]), dtype=np.int32))}
    for name, (kind, width, per_sweep) in _COLUMNS.items():
        if per_sweep:
            entry = types[kind] if width == 0 else pa.list_(types[kind], width)
            values = [np.asarray(v).reshape(-1, width).tolist() if width else list(v) for v in rows[name]]
            arrays[name] = pa.array(values, type=pa.list_(entry))
            continue
        if width == 0:
            arrays[name] = pa.array(rows[name], type=types[kind])
            continue
        if kind == "str":
            flat = pa.array([v for row in rows[name] for v in row], type=pa.string())
        else:
            flat = pa.array(np.asarray(rows[name], dtype=dtypes[kind]).reshape(-1))
        arrays[name] = pa.FixedSizeListArray.from_arrays(flat, width)
    return pa.table(arrays)


def _row_hash(values: dict) -> str:
    """What a row *is* (files, times, calibration), independent of its position and split: stages
    record it per row, so a row whose content changed is recomputed."""
    payload = {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v) for k, v in values.items() if "split" not in k}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def source_state(source) -> list[list]:
    """(file, size, mtime) of every table of the source: a change means the index is out of date."""
    table_root = Path(source.dataroot) / source.version
    if not table_root.is_dir():
        return []
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(table_root.glob("*.json"))]


class SampleIndex:
    """The index of one source, loaded: numpy views of its columns and per-row records."""

    def __init__(self, table, meta, dataroot: Path, path: str) -> None:
        self.table = table
        self.meta = meta
        self.dataroot = Path(dataroot)
        self.path = path
        self.tokens: list[str] = table.column("sample_token").to_pylist()
        self.splits = np.asarray(table.column("split").to_pylist())

    def __len__(self) -> int:
        return self.table.num_rows

    def rows(self, split: str | None = None) -> np.ndarray:
        """Row numbers, all or of one pretraining split ('train' or 'val')."""
        return np.arange(len(self)) if split is None else np.flatnonzero(self.splits == split)

    def column(self, name: str) -> np.ndarray | list[np.ndarray]:
        """A column as numpy; fixed-size list columns come back as (N, width), per-sweep columns as
        a list of N arrays (S_i,) or (S_i, width)."""
        col = self.table.column(name).combine_chunks()
        _, width, per_sweep = _COLUMNS.get(name, Column(""))
        if per_sweep:
            return [np.asarray(v) for v in col.to_pylist()]
        if width:
            return np.asarray(col.flatten().to_numpy(zero_copy_only=False)).reshape(len(self), width)
        return col.to_numpy(zero_copy_only=False)

    def record(self, row: int) -> dict:
        """Everything about one keyframe, with absolute paths and (4, 4) / (6, 4, 4) matrices."""
        r = {k: v[0] for k, v in self.table.slice(row, 1).to_pydict().items()}
        root = self.dataroot
        return {
            "row": row,
            "token": r["sample_token"],
            "scene": r["scene"],
            "split": r["split"],
            "lidar_path": root / r["lidar_path"],
            "lidarseg_path": root / r["lidarseg_path"] if r["lidarseg_path"] else None,
            "lidar_points": r["lidar_points"],
            "lidar_timestamp": r["lidar_timestamp"],
            "lidar_to_ego": np.asarray(r["lidar_to_ego"]).reshape(4, 4),
            "ego_to_global_lidar": np.asarray(r["ego_to_global_lidar"]).reshape(4, 4),
            "cam_tokens": r["cam_tokens"],
            "cam_paths": [root / p for p in r["cam_paths"]],
            "cam_timestamps": np.asarray(r["cam_timestamps"]),
            "cam_to_ego": np.asarray(r["cam_to_ego"]).reshape(6, 4, 4),
            "ego_to_global_cam": np.asarray(r["ego_to_global_cam"]).reshape(6, 4, 4),
            "intrinsics": np.asarray(r["cam_intrinsics"]).reshape(6, 3, 3),
            "image_hw": np.asarray(r["cam_hw"]).reshape(6, 2),
            # the neighbouring LiDAR sweeps, nearest in time first: S = 0 .. MAX_SWEEPS
            "sweep_paths": [root / p for p in r["sweep_paths"]],
            "sweep_timestamps": np.asarray(r["sweep_timestamps"], dtype=np.int64),  # (S,)
            "sweep_lidar_to_ego": np.asarray(r["sweep_lidar_to_ego"], dtype=np.float64).reshape(-1, 4, 4),  # (S, 4, 4)
            "sweep_ego_to_global": np.asarray(r["sweep_ego_to_global"], dtype=np.float64).reshape(-1, 4, 4),  # (S, 4, 4)
            "row_hash": r["row_hash"],
        }


def load(path: str, dataroot: Path) -> SampleIndex:
    import pyarrow.parquet as pq

    from pipeline.store.stores import _is_url, _url_fs, read_meta

    if _is_url(path):  # any fsspec URL (s3://, gs://, file://), not only those pyarrow knows
        fs, inner = _url_fs(path)
        return SampleIndex(pq.read_table(inner, filesystem=fs), read_meta(path), dataroot, path)
    return SampleIndex(pq.read_table(path), read_meta(path), dataroot, path)


def _write(table, path: str) -> None:
    """Write the index whole: locally through a temporary file and a rename, to an fsspec URL in
    one upload (object stores show an object only once it is complete)."""
    import pyarrow.parquet as pq

    from pipeline.store.stores import _is_url, _url_fs

    if _is_url(path):
        fs, inner = _url_fs(path)
        fs.makedirs(fs._parent(inner), exist_ok=True)
        pq.write_table(table, inner, filesystem=fs)
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def ensure_index(catalog, source: str | None = None, rebuild: bool = False, on_progress=None) -> tuple[SampleIndex, bool]:
    """(index, built): the source's index, rebuilt first if missing, of another fingerprint, or older
    than the dataset's tables. Every stage calls this instead of reading the devkit."""
    from pipeline.store.stores import StoreMeta, _kind, code_version, read_meta, utc_now, write_parquet_meta

    artifact = catalog.artifact("index", source)
    src = artifact.source
    state = source_state(src)
    meta = read_meta(artifact.path) if _kind(artifact.path) else None
    fresh = meta is not None and meta.complete and meta.fingerprint == artifact.fingerprint and meta.extra.get("source_state") == state
    if fresh and not rebuild and not meta.extra.get("problems"):
        return load(artifact.path, src.dataroot), False
    table, problems = build(src, artifact.params, on_progress)
    meta = StoreMeta(
        fingerprint=artifact.fingerprint,
        stage="index",
        version=VERSION,
        source=src.name,
        params=artifact.params.model_dump(mode="json"),
        inputs=artifact.fingerprint_inputs(),
        created=utc_now(),
        code_version=code_version(),
        rows_total=table.num_rows,
        rows_done=table.num_rows,
        complete=True,
        extra={"dataroot": str(src.dataroot), "version": src.version, "source_state": state, "cameras": list(CAMERAS), "problems": problems},
    )
    _write(write_parquet_meta(table, meta), artifact.path)
    return load(artifact.path, src.dataroot), True
