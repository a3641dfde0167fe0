"""What a store says about itself, and where stores are on disk.

Every store (a Parquet file or a zarr v3 group) carries a ``StoreMeta``: the fingerprint and the
stage, version, params and inputs that produced it, when and by which code, and how far it got. It
lives *in* the store (Parquet schema metadata under ``hvd``; the zarr group attribute ``hvd``) so it
cannot drift from the data, and ``complete: true`` is written last so a killed run reads as partial.
For zarr stores a 1-D ``done`` array (one flag per row, written by the worker that filled the row)
is the authority on progress: workers never rewrite the shared attributes, so they never race.

pyarrow and zarr are imported inside the functions: the CLI imports this module to build its
command tree, and ``hvd --help`` should not pay for them.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

import pipeline
from pipeline.errors import StoreError

if TYPE_CHECKING:
    import pyarrow as pa
    import zarr

META_KEY = "hvd"


class StoreMeta(BaseModel):
    """A store's description of itself. Unknown fields are ignored rather than refused: stores
    outlive the code that wrote them, and a newer writer may record more."""

    model_config = ConfigDict(extra="ignore")

    fingerprint: str
    stage: str
    version: int
    source: str
    params: dict[str, Any]
    inputs: dict[str, str]
    created: str  # ISO 8601, UTC
    code_version: str
    rows_total: int
    rows_done: int
    complete: bool
    extra: dict[str, Any] = {}


def utc_now() -> str:
    """The current time as ISO 8601 UTC, the format of ``StoreMeta.created``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _is_url(path: str) -> bool:
    return "://" in path


def _url_fs(path: str) -> tuple[Any, str]:
    import fsspec

    return fsspec.core.url_to_fs(path)


def _kind(path: str) -> str | None:
    """Whether ``path`` is a "file", a "dir" or nothing (None)."""
    if _is_url(path):
        fs, inner = _url_fs(path)
        if not fs.exists(inner):
            return None
        return "dir" if fs.isdir(inner) else "file"
    if os.path.isdir(path):
        return "dir"
    return "file" if os.path.exists(path) else None


def _parquet_meta(path: str) -> dict[str, Any]:
    import pyarrow.parquet as pq

    if _is_url(path):
        fs, inner = _url_fs(path)
        schema = pq.read_schema(inner, filesystem=fs)
    else:
        schema = pq.read_schema(path)
    raw = (schema.metadata or {}).get(META_KEY.encode())
    if raw is None:
        raise StoreError(f"{path} has no '{META_KEY}' metadata: it was not written by hvd")
    return json.loads(raw)


def _zarr_meta(path: str) -> dict[str, Any]:
    import numpy as np
    import zarr

    group = zarr.open_group(store=path, mode="r")
    attrs = group.attrs.get(META_KEY)
    if not isinstance(attrs, dict):
        raise StoreError(f"{path} has no '{META_KEY}' attribute: it was not written by hvd")
    meta = dict(attrs)
    done = group.get("done")
    if isinstance(done, zarr.Array) and done.ndim == 1:
        try:
            meta["rows_done"] = int(np.count_nonzero(done[:]))
        except Exception:  # a damaged done flag: that row is recomputed, the store is not complete
            meta["complete"] = False
    return meta


def read_meta(path: str) -> StoreMeta | None:
    """The metadata of the store at ``path``: a Parquet file or a zarr group directory.

    None if nothing is at ``path``; ``StoreError`` naming the path if something is there but is
    not a readable hvd store.
    """
    kind = _kind(path)
    if kind is None:
        return None
    try:
        raw = _parquet_meta(path) if kind == "file" else _zarr_meta(path)
    except StoreError:
        raise
    except Exception as exc:  # pyarrow and zarr raise many types for corrupt or foreign data
        raise StoreError(
            f"cannot read the store at {path} ({type(exc).__name__}: {exc}); "
            "delete it to rebuild"
        ) from exc
    try:
        return StoreMeta.model_validate(raw)
    except ValidationError as exc:
        bad = ", ".join(".".join(map(str, err["loc"])) or "(all)" for err in exc.errors())
        raise StoreError(f"the store at {path} has invalid hvd metadata (fields: {bad})") from exc


def write_parquet_meta(table: pa.Table, meta: StoreMeta) -> pa.Table:
    """``table`` with ``meta`` attached as schema metadata (``pq.write_table`` keeps it)."""
    metadata = dict(table.schema.metadata or {})
    metadata[META_KEY.encode()] = meta.model_dump_json().encode()
    return table.replace_schema_metadata(metadata)


def write_zarr_meta(group: zarr.Group, meta: StoreMeta) -> None:
    """Store ``meta`` as the group's ``hvd`` attribute (the zarr counterpart of the above)."""
    group.attrs[META_KEY] = meta.model_dump(mode="json")


def _git_suffix(repo: Path) -> str:
    """``+g<short hash>`` (plus ``+dirty`` for uncommitted changes to tracked files) when ``repo``
    is the top of a git checkout with commits; "" otherwise (installed package, no git)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != repo.resolve():
            return ""
        short = git("rev-parse", "--short=7", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"+g{short}" + ("+dirty" if dirty else "")


@functools.cache
def code_version() -> str:
    """The version of the code writing a store, e.g. ``0.1.0+g1a2b3c4``; read once per process."""
    repo = Path(pipeline.__file__).resolve().parent.parent
    return pipeline.__version__ + _git_suffix(repo)


def disk_usage(path: str) -> int:
    """Bytes used by a file or a directory tree (0 if absent); fsspec's ``du`` for URLs."""
    if _is_url(path):
        fs, inner = _url_fs(path)
        return int(fs.du(inner, total=True)) if fs.exists(inner) else 0
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            entry = os.path.join(root, name)
            if not os.path.islink(entry):
                total += os.path.getsize(entry)
    return total


def list_stores(stage_root: str) -> list[str]:
    """Every entry under a source's store directory (hidden names, used for temporary writes,
    excluded), as ``f"{stage_root}/{name}"`` so they compare equal to ``Artifact.path``."""
    if _is_url(stage_root):
        fs, inner = _url_fs(stage_root)
        found = fs.ls(inner, detail=False) if fs.isdir(inner) else []
        names = [entry.rstrip("/").rsplit("/", 1)[-1] for entry in found]
    else:
        names = os.listdir(stage_root) if os.path.isdir(stage_root) else []
    return sorted(f"{stage_root}/{name}" for name in names if not name.startswith("."))
