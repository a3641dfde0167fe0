"""Opening a nuScenes-format dataset through nuscenes-devkit, with errors that say which file is
wrong and what to do, and the cheap file checks the index runs on every keyframe."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pipeline.errors import SourceError

TABLES = (
    "category",
    "attribute",
    "visibility",
    "instance",
    "sensor",
    "calibrated_sensor",
    "ego_pose",
    "log",
    "scene",
    "sample",
    "sample_data",
    "sample_annotation",
    "map",
)
POINT_BYTES = 5 * 4  # x, y, z, intensity, ring as float32
CAMERAS: tuple[str, ...] = (  # the six camera channels, in the order every stage stores them
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_FRONT_LEFT",
)
LIDAR = "LIDAR_TOP"


def open_nuscenes(dataroot: Path, version: str):
    """``NuScenes(version, dataroot)`` (lidarseg included when present), or a ``SourceError`` that
    names the missing or broken file."""
    dataroot = Path(dataroot)
    if not dataroot.is_dir():
        raise SourceError(
            f"dataset root {dataroot} does not exist: point the source's dataroot in the catalog at a "
            f"nuScenes download, or generate synthetic data with `hvd data synth --out {dataroot}`"
        )
    table_root = dataroot / version
    if not table_root.is_dir():
        found = sorted(p.name for p in dataroot.iterdir() if p.is_dir() and (p / "sample.json").exists())
        raise SourceError(
            f"{table_root}: version folder missing (versions found in {dataroot}: {', '.join(found) or 'none'}); "
            "check the source's version in the catalog"
        )
    missing = [f"{t}.json" for t in TABLES if not (table_root / f"{t}.json").is_file()]
    if missing:
        raise SourceError(f"{table_root}: missing table(s) {', '.join(missing)} (a nuScenes version folder holds 13 tables)")
    lidarseg = lidarseg_files(dataroot, version)  # read first: a malformed lidarseg.json is named
    nusc = _devkit(dataroot, version, table_root, skip_lidarseg=False)
    if nusc is None:  # the devkit counts label files and asserts: let our per-keyframe checks name them
        nusc = _devkit(dataroot, version, table_root, skip_lidarseg=True)
    duplicate = duplicate_tokens(nusc, lidarseg)
    if duplicate:
        raise SourceError(f"{table_root}: {duplicate}; tokens must be unique (which record is meant is ambiguous)")
    return nusc


def _devkit(dataroot: Path, version: str, table_root: Path, skip_lidarseg: bool):
    """The devkit's ``NuScenes``, or None when (only) its lidarseg label-file count disagrees with
    lidarseg.json. ``skip_lidarseg`` opens it through a temporary folder of links to every table
    but lidarseg.json / panoptic.json, so that missing label files are left to ``check_lidar``."""
    from nuscenes.nuscenes import NuScenes

    shadow = None
    try:
        if skip_lidarseg:
            shadow = Path(tempfile.mkdtemp(prefix="hvd-tables-"))
            (shadow / version).mkdir()
            for entry in Path(dataroot).iterdir():  # maps/ and the rest, which the devkit may check
                if entry.name != version:
                    os.symlink(entry.resolve(), shadow / entry.name)
            for table in table_root.glob("*.json"):
                if table.name not in ("lidarseg.json", "panoptic.json"):
                    os.symlink(table.resolve(), shadow / version / table.name)
        with contextlib.redirect_stdout(io.StringIO()):
            return NuScenes(version=version, dataroot=str(shadow or dataroot), verbose=False)
    except json.JSONDecodeError:
        raise _json_error(table_root) from None
    except AssertionError as exc:
        if not skip_lidarseg and "label files but" in str(exc):
            return None
        raise SourceError(f"{table_root}: nuscenes-devkit refused the dataset: {exc}") from None
    except KeyError as exc:
        raise SourceError(
            f"{table_root}: inconsistent tables: a record refers to token {exc.args[0]!r}, which no table holds"
        ) from None
    except (TypeError, IndexError, AttributeError) as exc:
        raise SourceError(f"{table_root}: malformed table records ({type(exc).__name__}: {exc})") from None
    finally:
        if shadow is not None:
            shutil.rmtree(shadow, ignore_errors=True)


def lidarseg_files(dataroot: Path, version: str) -> dict[str, str] | None:
    """LIDAR_TOP sample_data token -> lidarseg label file (relative to the dataroot), from the
    version's lidarseg.json; None when the dataset has no lidarseg."""
    path = Path(dataroot) / version / "lidarseg.json"
    if not path.is_file():
        return None
    try:
        records = json.loads(path.read_bytes())
    except json.JSONDecodeError as exc:
        raise SourceError(f"{path}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    try:
        files = {}
        for record in records:
            token = record["sample_data_token"]
            if token in files:
                raise SourceError(f"{path}: two lidarseg records for sample_data {token} ({files[token]}, {record['filename']})")
            files[token] = record["filename"]
        return files
    except (TypeError, KeyError) as exc:
        raise SourceError(f"{path}: malformed lidarseg records ({type(exc).__name__}: {exc})") from None


def duplicate_tokens(nusc, lidarseg: dict[str, str] | None = None) -> str | None:
    """The first token that two records of one table share, described, or None. The devkit's
    token lookup silently keeps the last of them."""
    for table in nusc.table_names:
        records = getattr(nusc, table, None) or []
        seen: dict[str, dict] = {}
        for record in records:
            token = record.get("token")
            if token in seen:
                first, other = seen[token], record
                differs = sorted((k for k in set(first) | set(other) if first.get(k) != other.get(k)), key=lambda k: (k != "filename", k))
                what = ", ".join(f"{k}: {first.get(k)!r} vs {other.get(k)!r}" for k in differs[:3]) or "identical records"
                return f"table {table}.json has two records with token {token} ({what})"
            seen[token] = record
    return None


def inside_dataroot(root: Path, relative: str, table: str, token: str, trusted=()) -> str | None:
    """A problem if a path a table names is absolute, climbs out with ``..``, or (through a
    symbolic link) resolves outside the dataroot and every ``trusted`` folder; None if it stays
    inside."""
    where = f"{table} {token}: file {relative!r}"
    if not relative:
        return f"{where} is empty"
    if os.path.isabs(relative) or Path(relative).drive:
        return f"{where} is an absolute path; tables name files relative to the dataroot {root}"
    if ".." in Path(relative).parts:
        return f"{where} climbs out of the dataroot {root} with '..'"
    resolved = (Path(root) / relative).resolve()
    for base in (Path(root).resolve(), *(Path(t).expanduser().resolve() for t in trusted)):
        if resolved == base or base in resolved.parents:
            return None
    return (
        f"{where} resolves to {resolved} through a symbolic link, outside the dataroot {Path(root).resolve()}; "
        "if that folder is yours, list it in the source's `params: {index: {trusted_roots: [...]}}`"
    )


def calibration_problem(record: dict, table: str, image_hw: tuple[int, int] | None = None) -> str | None:
    """What is wrong with a ``calibrated_sensor`` or ``ego_pose`` record, or None: the rotation a
    unit quaternion (w, x, y, z) within 1e-3 (a rotation matrix given instead must be orthonormal
    with determinant 1 within 1e-3), the translation finite; a camera's intrinsics finite, focal
    lengths positive, no shear in the last row, the principal point inside the ``image_hw`` image."""
    where = f"{table} {record.get('token', '?')}"
    rotation = np.asarray(record.get("rotation", []), dtype=np.float64)
    translation = np.asarray(record.get("translation", []), dtype=np.float64)
    if rotation.shape == (4,):
        norm = float(np.linalg.norm(rotation)) if np.isfinite(rotation).all() else float("nan")
        if not abs(norm - 1.0) <= 1e-3:
            return f"{where}: rotation quaternion {rotation.tolist()} has norm {norm:.6g}, not 1"
    elif rotation.shape == (3, 3):
        if not np.isfinite(rotation).all() or not np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-3) or not abs(np.linalg.det(rotation) - 1) <= 1e-3:
            return f"{where}: rotation matrix {rotation.tolist()} is not orthonormal with determinant 1"
    else:
        return f"{where}: rotation {record.get('rotation')!r} is neither a (w, x, y, z) quaternion nor a 3x3 matrix"
    if translation.shape != (3,) or not np.isfinite(translation).all():
        return f"{where}: translation {record.get('translation')!r} is not 3 finite numbers"
    intrinsic = record.get("camera_intrinsic")
    if image_hw is None or intrinsic is None:
        return None
    k = np.asarray(intrinsic, dtype=np.float64)
    if k.shape != (3, 3) or not np.isfinite(k).all():
        return f"{where}: camera_intrinsic {intrinsic!r} is not a finite 3x3 matrix"
    height, width = image_hw
    if not (k[0, 0] > 0 and k[1, 1] > 0):
        return f"{where}: camera_intrinsic focal lengths fx = {k[0, 0]:g}, fy = {k[1, 1]:g} must be positive"
    if k[1, 0] != 0 or not np.array_equal(k[2], [0.0, 0.0, 1.0]):
        return f"{where}: camera_intrinsic {k.tolist()} is not an upper-triangular pinhole matrix with last row (0, 0, 1)"
    if not (0 <= k[0, 2] < width and 0 <= k[1, 2] < height):
        return f"{where}: camera_intrinsic principal point ({k[0, 2]:g}, {k[1, 2]:g}) is outside the {width}x{height} image"
    return None


def _json_error(table_root: Path) -> SourceError:
    """The first table (in the devkit's loading order) that does not parse, with where and why."""
    for path in [table_root / f"{t}.json" for t in TABLES] + [table_root / "lidarseg.json"]:
        if not path.exists():
            continue
        try:
            json.loads(path.read_bytes())
        except json.JSONDecodeError as exc:
            return SourceError(f"{path}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})")
    return SourceError(f"{table_root}: a table is not valid JSON")


def check_lidar(path: Path, lidarseg: Path | None) -> tuple[int, str | None]:
    """(number of points, problem or None) for a ``.pcd.bin`` and its lidarseg labels. Values are
    checked (finite) when a stage reads the file (``sensor_data.load_points``), not here."""
    if not path.is_file():
        return 0, f"{path}: LiDAR file missing"
    size = path.stat().st_size
    if size == 0 or size % POINT_BYTES:
        return 0, f"{path}: truncated LiDAR file ({size} bytes is not a whole number of {POINT_BYTES}-byte points)"
    n_points = size // POINT_BYTES
    if lidarseg is not None:
        if not lidarseg.is_file():
            return n_points, f"{lidarseg}: lidarseg labels missing"
        if lidarseg.stat().st_size != n_points:
            return n_points, f"{lidarseg}: {lidarseg.stat().st_size} labels for the {n_points} points of {path.name}"
    return n_points, None


def check_image(path: Path) -> str | None:
    """A problem with a camera image (missing, empty, or a JPEG cut short), or None."""
    if not path.is_file():
        return f"{path}: image missing"
    size = path.stat().st_size
    if size == 0:
        return f"{path}: image is empty"
    if path.suffix.lower() in (".jpg", ".jpeg"):
        with path.open("rb") as f:
            head = f.read(2)
            f.seek(max(size - 2, 0))
            tail = f.read(2)
        if head != b"\xff\xd8":
            return f"{path}: not a JPEG file"
        if tail != b"\xff\xd9":
            return f"{path}: truncated JPEG (no end-of-image marker)"
    return None
