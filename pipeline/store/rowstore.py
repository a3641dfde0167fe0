"""The store of a per-keyframe stage: a zarr v3 group with one row per keyframe.

Layout (N rows, in the order keyframes were first added; never reordered):

- ``token`` (N,) the keyframe's sample token: how rows are found, so an index that grows or is
  reordered never invalidates rows already computed;
- one array per output, shaped (N, *row_shape), chunked one row (or one camera of a row) per chunk,
  so parallel workers never write the same chunk;
- ``done`` (N,) int64, one chunk per row, written *last* by the worker that computed the row: 0 until
  then, afterwards a number derived from the index row's content hash, so a row whose inputs changed
  (same token, other files or calibration) reads as not done and is recomputed;
- the group ``shared``: store-level arrays that are not per row (e.g. a PCA basis), written by the
  driver;
- the ``hvd`` group attribute (``pipeline.store.stores.StoreMeta``), rewritten only by the driver.

Only the driver creates, resizes and commits; workers only write rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import StoreError
from pipeline.store.stores import META_KEY, StoreMeta, write_zarr_meta

TOKEN, DONE, SHARED = "token", "done", "shared"


@dataclass(frozen=True)
class ArraySpec:
    """One output array: its per-row shape and dtype, and how a row is split into chunks
    (``chunk`` is the per-row chunk shape; default: the whole row is one chunk)."""

    shape: tuple[int, ...]
    dtype: str
    chunk: tuple[int, ...] | None = None
    fill: float = 0


def done_value(row_hash: str) -> int:
    """The nonzero int64 a finished row stores: the first 60 bits of its content hash, plus one."""
    return int(row_hash[:15], 16) + 1


def _open_group(path: str, mode: str):
    """The zarr group at a local path or an fsspec URL (``s3://``, ``gs://``, ``file://``: fsspec's
    local filesystem creates the folders a chunk needs only when asked to)."""
    import zarr

    options = {"auto_mkdir": True} if path.startswith("file://") else None
    return zarr.open_group(store=path, mode=mode, storage_options=options)


def _codecs():
    from zarr.codecs import BloscCodec

    return [BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")]


class RowStore:
    def __init__(self, path: str, group) -> None:
        self.path = path
        self.group = group
        self._rows: dict[str, int] | None = None
        self._arrays: dict = {}  # array handles: looking one up reads its metadata

    def array(self, name: str):
        if name not in self._arrays:
            self._arrays[name] = self.group[name]
        return self._arrays[name]

    # --- driver side ---------------------------------------------------------------------------------

    @classmethod
    def open_or_create(cls, path: str, meta: StoreMeta, specs: dict[str, ArraySpec]) -> RowStore:
        """Open the store of this fingerprint, creating it (and its arrays) if needed, and growing
        any per-row dimension that ``specs`` now asks to be larger."""
        try:
            group = _open_group(path, mode="a")
        except Exception as exc:
            raise StoreError(f"cannot open the store at {path} ({type(exc).__name__}: {exc}); delete it to rebuild") from exc
        found = group.attrs.get(META_KEY)
        if found is None:
            write_zarr_meta(group, meta)
        elif found.get("fingerprint") != meta.fingerprint:
            raise StoreError(f"{path} holds fingerprint {found.get('fingerprint')}, not {meta.fingerprint}: delete it to rebuild")
        store = cls(path, group)
        n = store.rows
        if TOKEN not in group:
            group.create_array(TOKEN, shape=(n,), chunks=(4096,), dtype=str)
            group.create_array(DONE, shape=(n,), chunks=(1,), dtype="int64", fill_value=0)
        for name, spec in specs.items():
            chunk = spec.chunk or spec.shape
            if name not in group:
                group.create_array(
                    name, shape=(n, *spec.shape), chunks=(1, *chunk), dtype=spec.dtype, fill_value=spec.fill, compressors=_codecs()
                )
                continue
            array = group[name]
            if str(array.dtype) != np.dtype(spec.dtype).name or array.ndim != len(spec.shape) + 1:
                raise StoreError(f"{path}/{name} is {array.dtype} {array.shape[1:]}, expected {spec.dtype} {spec.shape}: delete it to rebuild")
            grown = tuple(max(a, b) for a, b in zip(array.shape[1:], spec.shape))
            if grown != array.shape[1:]:
                array.resize((array.shape[0], *grown))
        return store

    @classmethod
    def open(cls, path: str, mode: str = "r") -> RowStore:
        return cls(path, _open_group(path, mode))

    @property
    def rows(self) -> int:
        return self.group[TOKEN].shape[0] if TOKEN in self.group else 0

    def tokens(self) -> list[str]:
        return list(self.group[TOKEN][:]) if self.rows else []

    def done(self) -> np.ndarray:
        return self.group[DONE][:] if self.rows else np.zeros(0, dtype=np.int64)

    def assign(self, tokens: list[str]) -> np.ndarray:
        """Store rows of ``tokens``, appending rows for tokens the store has not seen."""
        known = {t: i for i, t in enumerate(self.tokens())}
        new = [t for t in dict.fromkeys(tokens) if t not in known]
        if new:
            start = self.rows
            for name in self.group.array_keys():
                array = self.group[name]
                array.resize((start + len(new), *array.shape[1:]))
            self.group[TOKEN][start:] = np.array(new, dtype=object)
            known.update({t: start + i for i, t in enumerate(new)})
        return np.array([known[t] for t in tokens], dtype=np.int64)

    def pending(self, rows: np.ndarray, row_hashes: list[str]) -> np.ndarray:
        """Which of ``rows`` are not done for the content hashes they must have."""
        done = self.done()
        expected = np.array([done_value(h) for h in row_hashes], dtype=np.int64)
        return done[rows] != expected

    def commit(self, meta: StoreMeta) -> None:
        write_zarr_meta(self.group, meta)

    # --- worker side -----------------------------------------------------------------------------

    def write(self, row: int, values: dict[str, np.ndarray], row_hash: str) -> None:
        """Write one row's arrays, then mark it done (a row killed half-way stays not done).
        Ragged values fill a prefix of the row: only the chunks they touch are written."""
        for name, value in values.items():
            array = self.array(name)
            if value.shape == array.shape[1:]:
                array[row] = value
            elif len(value):
                array[(row, *(slice(0, n) for n in value.shape))] = value
        self.array(DONE)[row] = done_value(row_hash)

    # --- readers ---------------------------------------------------------------------------------

    def read(self, name: str, row: int, length: int | None = None) -> np.ndarray:
        """A row of an array, or its first ``length`` entries (only those chunks are read)."""
        array = self.array(name)
        return array[row] if length is None else array[row, :length]

    def has_shared(self, name: str) -> bool:
        return SHARED in self.group and name in self.group[SHARED]

    def write_shared(self, name: str, data: np.ndarray) -> None:
        """A store-level array (driver side, before any row is computed)."""
        self.group.require_group(SHARED).create_array(name, data=data, overwrite=True)

    def read_shared(self, name: str) -> np.ndarray:
        """A store-level array, read once per process."""
        key = f"{SHARED}/{name}"
        if key not in self._arrays:
            self._arrays[key] = self.group[SHARED][name][:]
        return self._arrays[key]

    def row_of(self, token: str) -> int | None:
        """The store row of a sample token, None if the store has never seen it."""
        if self._rows is None:
            self._rows = {t: i for i, t in enumerate(self.tokens())}
        return self._rows.get(token)

    def is_done(self, row: int, row_hash: str) -> bool:
        """Whether ``row`` was computed from the index row content with hash ``row_hash``."""
        return int(self.array(DONE)[row]) == done_value(row_hash)
