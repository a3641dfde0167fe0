"""Opening a nuScenes-format dataset through nuscenes-devkit, with errors that say which file is
wrong and what to do, and the cheap file checks the index runs on every keyframe."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

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
    from nuscenes.nuscenes import NuScenes

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    except json.JSONDecodeError:
        raise _json_error(table_root) from None
    except AssertionError as exc:
        raise SourceError(f"{table_root}: nuscenes-devkit refused the dataset: {exc}") from None
    except KeyError as exc:
        raise SourceError(
            f"{table_root}: inconsistent tables: a record refers to token {exc.args[0]!r}, which no table holds"
        ) from None
    except (TypeError, IndexError, AttributeError) as exc:
        raise SourceError(f"{table_root}: malformed table records ({type(exc).__name__}: {exc})") from None


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
    """(number of points, problem or None) for a ``.pcd.bin`` and its lidarseg labels."""
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
