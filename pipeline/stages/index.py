"""The sample index: one Parquet row per keyframe of a nuScenes-format dataset (real or synthetic),
with the paths, timestamps, calibration and ego poses every later stage reads instead of the
devkit, plus the scene split, and the ``MAX_SWEEPS`` LIDAR_TOP sweeps nearest in time to the
keyframe's (path, time, calibration, ego pose; for stages that accumulate sweeps).

Built through nuscenes-devkit; every file a row names is checked (present, not truncated, inside the
dataroot), every calibration and ego pose it uses is checked (unit quaternions, finite translations,
sane intrinsics), and each problem is recorded by file and sample. Such keyframes stay in the index
(the stages then fail just those rows, until the data is fixed) unless ``allow_missing`` drops them; a
keyframe whose *records* are wrong (a path outside the dataroot, a bad calibration) carries the reason
in its ``problem`` column, and no stage opens its files. Scenes without keyframes are reported and
left out of the splits.

Each row records the state (size and modification time) of every file it names: ``lidar_state``,
``lidarseg_state``, ``cam_states``, ``sweep_states``. A stage's row is done for a hash of the row's
records and the states of the files *that stage* reads (``SampleIndex.row_hashes``; a stage module's
``reads(params)`` names them), so a file changed after a stage ran makes exactly the rows that read
it stale, in exactly the stages that read it. The index is rebuilt when its fingerprint, the
dataset's tables or any input file's state change, or while it records problems (``ensure_index``).
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

VERSION = 4  # 2: the neighbouring LIDAR_TOP sweeps of each keyframe; 3: file states, problem, content_hash;
# 4: official_split is the devkit's placement only; the scene table order and split kind in the meta

MAX_REPORTED = 20
MAX_SWEEPS = 10  # neighbouring LiDAR sweeps indexed per keyframe (nuScenes: 20 Hz, so +-0.25 s)


class IndexParams(BaseModel):
    """How the index is built. ``allow_missing`` drops keyframes whose files are missing or
    truncated, or whose records are refused (recorded in the index), instead of failing them.
    ``trusted_roots``: folders outside the dataroot that symbolic links inside it may point into
    (e.g. ``samples/`` linked to another disk); any other link that leaves the dataroot is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_missing: bool = False
    trusted_roots: tuple[str, ...] = ()


STAGE = StageInfo(
    name="index",
    version=VERSION,
    params=IndexParams,
    suffix=".parquet",
    description="one row per keyframe: paths, timestamps, calibration, ego poses, split",
)


def _pose(record: dict) -> np.ndarray:
    """The record's 4x4 transform (NaN where its quaternion is zero: such records are refused)."""
    from pipeline.data.geometry import rigid

    with np.errstate(invalid="ignore", divide="ignore"):
        return rigid(np.asarray(record["rotation"], dtype=np.float64), record["translation"])


def _neighbour_sweeps(nusc, lidar: dict) -> tuple[dict[str, list], list[dict]]:
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
    columns = {
        "sweep_paths": [sd["filename"] for sd in found],
        "sweep_timestamps": [sd["timestamp"] for sd in found],
        "sweep_lidar_to_ego": np.array([_pose(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])).ravel() for sd in found]).reshape(-1, 16),
        "sweep_ego_to_global": np.array([_pose(nusc.get("ego_pose", sd["ego_pose_token"])).ravel() for sd in found]).reshape(-1, 16),
    }
    return columns, found


def _scene_splits(nusc, split, empty: set[str]) -> dict[str, tuple[str, str]]:
    """scene name -> (pretraining split, the devkit's official split) for the scenes that have keyframes."""
    from pipeline.data.splits import split_scenes

    names = [s["name"] for s in nusc.scene if s["name"] not in empty]
    return split_scenes(split.kind, names, nusc.version, split.val_fraction, split.seed)


def _is_empty(scene: dict) -> bool:
    return not scene.get("first_sample_token") or scene.get("nbr_samples", 1) == 0


def _record_problems(nusc, root: Path, lidar: dict, cams: list[dict], sweeps: list[dict], lidarseg: str | None, trusted=()) -> list[str]:
    """Why a keyframe's records cannot be used (whatever its files hold): a path outside the
    dataroot, a missing lidarseg record, a bad calibration or ego pose."""
    from pipeline.data.source import calibration_problem, inside_dataroot

    problems = [inside_dataroot(root, sd["filename"], "sample_data", sd["token"], trusted) for sd in (lidar, *cams, *sweeps)]
    if lidarseg is None:
        problems.append(f"sample_data {lidar['token']}: no lidarseg record (lidarseg.json lists none for this LIDAR_TOP keyframe)")
    elif lidarseg:
        problems.append(inside_dataroot(root, lidarseg, "lidarseg", lidar["token"], trusted))
    for i, sd in enumerate((lidar, *cams, *sweeps)):
        hw = (sd["height"], sd["width"]) if 1 <= i <= len(cams) else None
        problems.append(calibration_problem(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]), "calibrated_sensor", hw))
        problems.append(calibration_problem(nusc.get("ego_pose", sd["ego_pose_token"]), "ego_pose"))
    return list(dict.fromkeys(p for p in problems if p))


FILE_KINDS = ("lidar", "lidarseg", "cams", "sweeps")  # what a stage's ``reads(params)`` may name
_PATHS = {"lidar": "lidar_path", "lidarseg": "lidarseg_path", "cams": "cam_paths", "sweeps": "sweep_paths"}
_STATES = {"lidar": "lidar_state", "lidarseg": "lidarseg_state", "cams": "cam_states", "sweeps": "sweep_states"}


def file_state(root: Path, relative: str) -> str:
    """'size:mtime_ns' of a file a table names (what changes when it is replaced or edited, read
    with one ``stat``); 'missing'; '' for no file; 'refused' for a path absolute or climbing out of
    the dataroot, which is never looked at."""
    if not relative:
        return ""
    if os.path.isabs(relative) or ".." in Path(relative).parts:
        return "refused"
    try:
        st = os.stat(root / relative)
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def _file_states(root: Path, values: dict) -> dict:
    return {
        "lidar_state": file_state(root, values["lidar_path"]),
        "lidarseg_state": file_state(root, values["lidarseg_path"]),
        "cam_states": [file_state(root, p) for p in values["cam_paths"]],
        "sweep_states": [file_state(root, p) for p in values["sweep_paths"]],
    }


def build(source, params: IndexParams, on_progress: Callable[[int, int], None] | None = None):
    """(pyarrow table, problems, empty scenes, scene table) for ``source`` (a
    ``pipeline.store.catalog.Source``): one message per missing, truncated or refused file and per
    bad calibration, naming the sample; with ``allow_missing`` those keyframes are left out. Rows
    follow the scenes by name; the scene table lists the scenes with keyframes in the dataset's
    ``scene.json`` order, which SLidR's label-fraction counting walks."""
    import pyarrow as pa

    from pipeline.data.source import check_image, check_lidar, lidarseg_files, open_nuscenes

    nusc = open_nuscenes(source.dataroot, source.version)
    root = Path(source.dataroot)
    lidarseg_of = lidarseg_files(root, source.version)
    scenes = sorted(nusc.scene, key=lambda s: s["name"])
    empty = [s["name"] for s in scenes if _is_empty(s)]
    splits = _scene_splits(nusc, source.split, set(empty))
    rows: dict[str, list] = {k: [] for k in _COLUMNS}
    problems: list[str] = []
    for done, scene in enumerate(scenes):
        token = "" if scene["name"] in empty else scene["first_sample_token"]
        while token:
            sample = nusc.get("sample", token)
            token = sample["next"]
            try:
                lidar = nusc.get("sample_data", sample["data"][LIDAR])
                cams = [nusc.get("sample_data", sample["data"][c]) for c in CAMERAS]
            except KeyError as exc:
                problems.append(f"sample {sample['token']} ({scene['name']}): no {exc.args[0]} sample_data")
                continue
            sweeps, sweep_records = _neighbour_sweeps(nusc, lidar)
            lidarseg = None if lidarseg_of is None else lidarseg_of.get(lidar["token"])
            refused = _record_problems(nusc, root, lidar, cams, sweep_records, "" if lidarseg_of is None else lidarseg, params.trusted_roots)
            lidarseg = lidarseg or ""
            if refused:  # no file of this keyframe is opened
                n_points, bad = 0, refused
            else:
                n_points, problem = check_lidar(root / lidar["filename"], root / lidarseg if lidarseg else None)
                bad = [problem] if problem else []
                bad += [p for p in (check_image(root / c["filename"]) for c in cams) if p]
            problems += [f"sample {sample['token']} ({scene['name']}): {p}" for p in bad]
            if bad and params.allow_missing:
                continue
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
                "cam_tokens": [c["token"] for c in cams],
                "cam_paths": [c["filename"] for c in cams],
                "cam_timestamps": [c["timestamp"] for c in cams],
                "cam_hw": [v for c in cams for v in (c["height"], c["width"])],
                **_calibration_columns(nusc, lidar, cams, refused),
                **sweeps,
                "problem": "; ".join(refused),
            }
            values["content_hash"] = _row_hash(values)
            values |= _file_states(root, values)
            values["row_hash"] = _stage_hash(values["content_hash"], [values[k] for k in _STATES.values()])
            for key, value in values.items():
                rows[key].append(value)
        if on_progress:
            on_progress(done + 1, len(scenes))
    scene_table = [s["name"] for s in nusc.scene if not _is_empty(s)]
    return _to_table(pa, rows), problems, empty, scene_table


def _calibration_columns(nusc, lidar: dict, cams: list[dict], refused: list[str]) -> dict[str, np.ndarray]:
    """The keyframe's sensor-to-ego, ego-to-global and intrinsic matrices (NaN for a keyframe whose
    records were refused: nothing may compute with them)."""
    if refused:
        nan = np.full(16, np.nan)
        return {
            "lidar_to_ego": nan,
            "ego_to_global_lidar": nan,
            "cam_to_ego": np.full(96, np.nan),
            "ego_to_global_cam": np.full(96, np.nan),
            "cam_intrinsics": np.full(54, np.nan),
        }
    calib = [nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]) for sd in (lidar, *cams)]
    poses = [_pose(nusc.get("ego_pose", sd["ego_pose_token"])) for sd in (lidar, *cams)]
    return {
        "lidar_to_ego": _pose(calib[0]).ravel(),
        "ego_to_global_lidar": poses[0].ravel(),
        "cam_to_ego": np.concatenate([_pose(c).ravel() for c in calib[1:]]),
        "ego_to_global_cam": np.concatenate([p.ravel() for p in poses[1:]]),
        "cam_intrinsics": np.concatenate([np.asarray(c["camera_intrinsic"], dtype=np.float64).ravel() for c in calib[1:]]),
    }


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
    "problem": Column("str"),  # why the keyframe's records are refused ('' if they are not)
    "lidar_state": Column("str"),  # file_state() of each input file
    "lidarseg_state": Column("str"),
    "cam_states": Column("str", 6),
    "sweep_states": Column("str", per_sweep=True),
    "content_hash": Column("str"),  # the row's records: paths, times, calibration (no split, no file state)
    "row_hash": Column("str"),  # content_hash and every file state: the row as any stage may read it
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


def _stage_hash(content_hash: str, states: list) -> str:
    return hashlib.sha256(json.dumps([content_hash, states]).encode()).hexdigest()[:32]


def _row_hash(values: dict) -> str:
    """What a row's records say (files, times, calibration), independent of its position and
    split; combined with the states of the files a stage reads, it is what the stage's row is done
    for (``SampleIndex.row_hashes``)."""
    derived = ("lidar_points",)  # read from the file's size: covered by its state, not a record
    payload = {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v) for k, v in values.items() if "split" not in k and k not in derived}
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

    def changed_inputs(self) -> list[str]:
        """Sample tokens of the rows whose input files changed (size or modification time) since
        the index was built: one ``stat`` per file."""
        columns = {name: self.table.column(name).to_pylist() for name in (*_PATHS.values(), *_STATES.values())}
        changed = []
        for i, token in enumerate(self.tokens):
            stored = {name: columns[name][i] for name in _STATES.values()}
            if _file_states(self.dataroot, {name: columns[name][i] for name in _PATHS.values()}) != stored:
                changed.append(token)
        return changed

    def row_hashes(self, reads: tuple[str, ...] | None = None) -> list[str]:
        """Per row, what a stage's row is done for: the row's records and the states of the files
        of the kinds in ``reads`` (``FILE_KINDS``; None: every file, the ``row_hash`` column)."""
        if reads is None:
            return self.table.column("row_hash").to_pylist()
        unknown = set(reads) - set(FILE_KINDS)
        if unknown:
            raise ValueError(f"unknown input file kinds {sorted(unknown)} (known: {FILE_KINDS})")
        content = self.table.column("content_hash").to_pylist()
        states = [self.table.column(_STATES[k]).to_pylist() for k in FILE_KINDS if k in reads]
        return [_stage_hash(c, [s[i] for s in states]) for i, c in enumerate(content)]

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
        """Everything about one keyframe, with absolute paths and (4, 4) / (6, 4, 4) matrices. A
        keyframe with a ``problem`` must not be computed (its paths may lie outside the dataroot)."""
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
            "problem": r["problem"],
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
        pq.write_table(table, inner, filesystem=fs, write_page_checksum=True)
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    pq.write_table(table, tmp, write_page_checksum=True)  # so `hvd catalog verify` can check the pages
    os.replace(tmp, path)


def ensure_index(catalog, source: str | None = None, rebuild: bool = False, on_progress=None) -> tuple[SampleIndex, bool]:
    """(index, built): the source's index, rebuilt first if missing, of another fingerprint, or older
    than the dataset's tables. Every stage calls this instead of reading the devkit."""
    from pipeline.store.stores import StoreMeta, _kind, code_version, read_meta, utc_now, write_parquet_meta

    artifact = catalog.artifact("index", source)
    src = artifact.source
    if src.format != "nuscenes":
        raise SourceError(
            f"source {src.name} is a SemanticKITTI dataset ({src.dataroot}): it has no nuScenes tables to index; preprocessing and "
            "pretraining need a nuScenes-format source, fine-tuning and evaluation read it directly (hvd train finetune --dataset semantickitti)"
        )
    state = source_state(src)
    meta = read_meta(artifact.path) if _kind(artifact.path) else None
    fresh = meta is not None and meta.complete and meta.fingerprint == artifact.fingerprint and meta.extra.get("source_state") == state
    if fresh and not rebuild and not meta.extra.get("problems"):
        index = load(artifact.path, src.dataroot)
        if not index.changed_inputs():
            return index, False
    table, problems, empty, scene_table = build(src, artifact.params, on_progress)
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
        extra={"dataroot": str(src.dataroot), "version": src.version, "source_state": state, "cameras": list(CAMERAS), "problems": problems, "empty_scenes": empty,
               "scene_table": scene_table, "split_kind": src.split.kind},
    )
    _write(write_parquet_meta(table, meta), artifact.path)
    return load(artifact.path, src.dataroot), True
