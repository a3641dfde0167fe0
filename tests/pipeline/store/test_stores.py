"""Store metadata round-trips through Parquet and zarr; disk usage and store listing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr

import pipeline
from pipeline.errors import StoreError
from pipeline.store.stores import (
    StoreMeta,
    _git_suffix,
    code_version,
    disk_usage,
    list_stores,
    read_meta,
    utc_now,
    write_parquet_meta,
    write_zarr_meta,
)


def _meta(**changes: object) -> StoreMeta:
    fields = dict(
        fingerprint="f" * 64,
        stage="index",
        version=1,
        source="alpha",
        params={"allow_missing": False},
        inputs={"source": "a" * 64},
        created=utc_now(),
        code_version=code_version(),
        rows_total=5,
        rows_done=5,
        complete=True,
        extra={"scenes": ["scene-0001"]},
    )
    return StoreMeta(**{**fields, **changes})


def test_parquet_round_trip_keeps_other_metadata(tmp_path: Path) -> None:
    table = pa.table({"row": np.arange(5)}).replace_schema_metadata({b"origin": b"test"})
    meta = _meta()
    tagged = write_parquet_meta(table, meta)
    path = tmp_path / "index.parquet"
    pq.write_table(tagged, path)
    assert read_meta(str(path)) == meta
    assert pq.read_schema(path).metadata[b"origin"] == b"test"
    assert pq.read_table(path).column("row").to_pylist() == [0, 1, 2, 3, 4]


def test_zarr_done_array_overrides_rows_done(tmp_path: Path) -> None:
    path = tmp_path / "superpixels.zarr"
    group = zarr.open_group(store=str(path), mode="w")
    write_zarr_meta(group, _meta(stage="superpixels", rows_done=0, complete=False))
    done = group.create_array("done", shape=(5,), dtype="uint8", chunks=(1,))
    done[:] = np.array([1, 1, 0, 1, 0], dtype=np.uint8)
    meta = read_meta(str(path))
    assert meta is not None
    assert meta.rows_done == 3  # the done flags, not the attribute's 0
    assert (meta.stage, meta.rows_total, meta.complete) == ("superpixels", 5, False)
    assert meta.extra == {"scenes": ["scene-0001"]}


def test_read_meta_of_nothing_is_none(tmp_path: Path) -> None:
    assert read_meta(str(tmp_path / "absent.parquet")) is None


@pytest.mark.parametrize("kind", ["garbage-file", "foreign-parquet", "plain-dir", "bad-fields"])
def test_unreadable_stores_raise_store_error_naming_the_path(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "store"
    if kind == "garbage-file":
        path.write_bytes(b"not parquet at all")
    elif kind == "foreign-parquet":
        pq.write_table(pa.table({"x": [1]}), path)
    elif kind == "plain-dir":
        path.mkdir()
        (path / "notes.txt").write_text("hi")
    else:
        group = zarr.open_group(store=str(path), mode="w")
        group.attrs["hvd"] = {"fingerprint": "f", "stage": "index"}
    with pytest.raises(StoreError) as info:
        read_meta(str(path))
    assert str(path) in str(info.value)


def test_disk_usage_sums_a_tree(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "x.bin").write_bytes(b"1" * 100)
    (tmp_path / "a" / "b" / "y.bin").write_bytes(b"2" * 23)
    assert disk_usage(str(tmp_path / "a")) == 123
    assert disk_usage(str(tmp_path / "a" / "x.bin")) == 100
    assert disk_usage(str(tmp_path / "missing")) == 0


def test_list_stores_skips_hidden_entries(tmp_path: Path) -> None:
    root = tmp_path / "stores" / "alpha"
    root.mkdir(parents=True)
    (root / "index-0123.parquet").write_bytes(b"")
    (root / "superpixels-4567.zarr").mkdir()
    (root / ".index-89ab.parquet.tmp").write_bytes(b"")
    assert list_stores(str(root)) == [f"{root}/index-0123.parquet", f"{root}/superpixels-4567.zarr"]
    assert list_stores(str(tmp_path / "stores" / "beta")) == []


def test_code_version_starts_with_the_package_version() -> None:
    assert code_version().startswith(pipeline.__version__)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_suffix_follows_commits_and_changes(tmp_path: Path) -> None:
    identity = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"}
    env = {**os.environ, **identity, "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-C", str(tmp_path), *args], check=True, env=env, capture_output=True
        )

    assert _git_suffix(tmp_path) == ""  # not a checkout
    git("init", "-q")
    assert _git_suffix(tmp_path) == ""  # no commits yet
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-q", "-m", "one")
    clean = _git_suffix(tmp_path)
    assert clean.startswith("+g") and len(clean) == 9 and "dirty" not in clean
    (tmp_path / "a.py").write_text("x = 2\n")
    assert _git_suffix(tmp_path) == clean + "+dirty"
    (tmp_path / "sub").mkdir()
    assert _git_suffix(tmp_path / "sub") == ""  # inside, but not the top of, a checkout
