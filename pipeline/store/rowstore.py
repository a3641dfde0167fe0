"""The store of a per-keyframe stage: a zarr v3 group with one row per keyframe.

Layout (N rows, in the order keyframes were first added; never reordered):

- ``token`` (N,) the keyframe's sample token: how rows are found, so an index that grows or is
  reordered never invalidates rows already computed;
- one array per output, shaped (N, *row_shape), chunked one row (or one camera of a row) per chunk,
  so parallel workers never write the same chunk;
- ``done`` (N,) int64, one chunk per row, written *last* by the worker that computed the row: 0 until
  then, afterwards a number derived from the index row's content hash, so a row whose inputs changed
  (same token, other files or calibration) reads as not done and is recomputed;
- ``check`` (N, K) int64, one chunk per row, written before ``done``: for each output, what the
  row's value was (its shape: D per-row dimensions; a ragged value fills only a prefix) and the
  CRC-32 of its bytes in each of the B blocks of the row's first axis that one chunk holds (a
  camera image, or 32768 pairings); -1 where nothing was recorded. Which columns hold what is the
  ``layout`` of the ``hvd_checks`` attribute (an output that grows gets its new blocks' columns
  appended, so rows already written keep theirs). One array for all outputs: a reader pays one
  extra small chunk per row and store, however many arrays it reads;
- the group ``shared``: store-level arrays that are not per row (e.g. a PCA basis), written by the
  driver, each with the CRC-32 of its bytes in its ``crc32`` attribute;
- the ``hvd`` group attribute (``pipeline.store.stores.StoreMeta``), rewritten only by the driver,
  and ``hvd_checks``: the check layout, and whether every done row has a checksum (false for a
  store that holds rows written before checksums existed).

Only the driver creates, resizes and commits; workers only write rows.

Disk is not trusted: every read of a row (``read``, ``read_entry``) verifies the blocks it reads
against the row's checksums, so a damaged, truncated or deleted chunk (which zarr would read as the
fill value) raises a ``StoreError`` naming the store, array, row and sample token instead of
training on garbage. Verification reads only the blocks a read needs (plus the row's small
``check`` chunk, kept for the last row read). ``pipeline.store.verify`` checks every row of a store and
marks damaged rows not done, so the next ``hvd prep`` recomputes just those.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

import numpy as np

from pipeline.errors import StoreError
from pipeline.store.stores import META_KEY, StoreMeta, write_zarr_meta

TOKEN, DONE, SHARED, CHECK = "token", "done", "shared", "check"
CHECKS_KEY, CRC_KEY = "hvd_checks", "crc32"
UNRECORDED = -1  # fill value of the check array: nothing recorded for this row (or block)


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


def crc(data: np.ndarray) -> int:
    """CRC-32 of an array's bytes in C order (zlib's: always available, 3 GB/s, deterministic)."""
    return zlib.crc32(np.ascontiguousarray(data))


def blocks(array) -> tuple[int, int]:
    """(entries of the row's first axis per block, blocks per row) of a per-row array: a block is
    what one chunk holds along that axis; a per-row scalar is one block."""
    if array.ndim == 1:
        return 1, 1
    size = array.chunks[1]
    return size, -(-array.shape[1] // size)


def row_check(value: np.ndarray, array) -> np.ndarray:
    """What ``write`` records for ``value`` (already of ``array``'s dtype): its shape, then the
    CRC-32 of each block it fills (-1 for the others)."""
    size, n_blocks = blocks(array)
    check = np.full(value.ndim + n_blocks, UNRECORDED, dtype=np.int64)
    check[: value.ndim] = value.shape
    sums = [crc(value)] if value.ndim == 0 else [crc(value[k : k + size]) for k in range(0, len(value), size)]
    check[value.ndim : value.ndim + len(sums)] = sums
    return check


class Damage(Exception):
    """A row (or shared array) whose stored bytes are missing, undecodable or differ from what was
    written; ``reason`` says which. ``RowStore`` turns it into a ``StoreError`` for readers, and
    ``pipeline.store.verify`` collects it."""

    def __init__(self, name: str, row: int | None, reason: str) -> None:
        super().__init__(reason)
        self.name, self.row, self.reason = name, row, reason


class Unverifiable(Exception):
    """A row marked done that has no checksum: written before checksums existed."""


def _open_group(path: str, mode: str):
    """The zarr group at a local path or an fsspec URL (``s3://``, ``gs://``, ``file://``: fsspec's
    local filesystem creates the folders a chunk needs only when asked to)."""
    import zarr

    options = {"auto_mkdir": True} if path.startswith("file://") else None
    return zarr.open_group(store=path, mode=mode, storage_options=options)


def _codecs():
    from zarr.codecs import BloscCodec

    return [BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")]


def _get(array, selection, name: str, row: int | None):
    """``array[selection]``, a chunk that cannot be decoded raised as ``Damage`` (the codecs raise
    RuntimeError, ValueError and others; a wrong selection is a bug and stays an IndexError)."""
    try:
        return array[selection]
    except (IndexError, TypeError):
        raise
    except Exception as exc:
        raise Damage(name, row, f"undecodable chunk ({type(exc).__name__}: {exc})") from exc


class _ChunkFiles:
    """Reads a row's chunks of a local store's array straight from their files, decoding them with
    numcodecs: what zarr does for these arrays, without its per-call machinery (an event loop in
    another thread, selection planning), which costs milliseconds per read and made reading a row
    slower than the arithmetic a training example does with it. Only for the layouts ``RowStore``
    creates: one row per chunk, bytes (little-endian) then Blosc or Zstd, whole trailing axes per
    chunk; ``of`` returns None for anything else, and readers use zarr."""

    def __init__(self, folder: str, array, codec) -> None:
        self.folder, self.array, self.codec = folder, array, codec
        self.dtype = np.dtype(array.dtype).newbyteorder("<")
        self.chunk = tuple(array.chunks)  # (1, ...): one row
        self.fill = np.asarray(array.fill_value, dtype=self.dtype)

    @classmethod
    def of(cls, path: str, name: str, array) -> _ChunkFiles | None:
        if "://" in path or not os.path.isdir(os.path.join(path, name)):
            return None
        try:
            import numcodecs
            from zarr.codecs import BloscCodec, BytesCodec, ZstdCodec

            meta = array.metadata
            codecs = getattr(meta, "codecs", ())
            encoding = getattr(meta, "chunk_key_encoding", None)
            if (
                len(codecs) != 2
                or not isinstance(codecs[0], BytesCodec)
                or str(getattr(codecs[0].endian, "value", codecs[0].endian)) != "little"
                or not isinstance(codecs[1], (BloscCodec, ZstdCodec))
                or getattr(encoding, "separator", None) != "/"
                or array.chunks[0] != 1
                or (array.ndim > 2 and tuple(array.chunks[2:]) != tuple(array.shape[2:]))
                or np.dtype(array.dtype).kind not in "biuf"
            ):
                return None
            codec = numcodecs.Blosc() if isinstance(codecs[1], BloscCodec) else numcodecs.Zstd()
            return cls(os.path.join(path, name), array, codec)
        except Exception:  # another zarr version's metadata: let zarr read it
            return None

    def read(self, name: str, row: int, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """``array[row]`` (a per-row scalar), or ``array[row, lo:hi]``."""
        if self.array.ndim == 1:
            return self._chunk(name, row, (row,)).reshape(())
        size, extent = self.chunk[1], self.array.shape[1]
        hi = extent if hi is None else min(hi, extent)
        first, last = lo // size, max(-(-hi // size), lo // size + 1)
        tail = (0,) * (self.array.ndim - 2)
        parts = [self._chunk(name, row, (row, k, *tail)) for k in range(first, last)]
        data = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return data[lo - first * size : hi - first * size]

    def _chunk(self, name: str, row: int, coords: tuple[int, ...]) -> np.ndarray:
        file = os.path.join(self.folder, "c", *map(str, coords))
        try:
            with open(file, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:  # never written, or all fill values (zarr stores no such chunk)
            return np.full(self.chunk[1:], self.fill, dtype=self.dtype)
        except OSError as exc:
            raise Damage(name, row, f"unreadable chunk {file} ({exc})") from exc
        out = np.empty(self.chunk, dtype=self.dtype)
        try:
            self.codec.decode(raw, out=out)
        except Exception as exc:
            raise Damage(name, row, f"undecodable chunk ({type(exc).__name__}: {exc})") from exc
        return out[0]


class RowStore:
    def __init__(self, path: str, group) -> None:
        self.path = path
        self.group = group
        self._rows: dict[str, int] | None = None
        self._arrays: dict = {}  # array handles: looking one up reads its metadata
        self._files: dict[str, _ChunkFiles | None] = {}  # direct chunk readers (local stores)
        self._check_row: tuple[int, np.ndarray] | None = None  # (row, its check) of the last row read
        self._checks_layout: dict | None = None

    def array(self, name: str):
        if name not in self._arrays:
            try:
                self._arrays[name] = self.group[name]
            except Exception as exc:  # its zarr.json deleted or damaged
                raise StoreError(f"{self.path}: the array {name} cannot be opened ({type(exc).__name__}: {exc}); delete the store to rebuild it") from exc
        return self._arrays[name]

    def _row_part(self, name: str, row: int, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """``array[row]`` (a per-row scalar) or ``array[row, lo:hi]``, unverified: from the chunk
        files when the store is local, else through zarr (``Damage`` if undecodable)."""
        if name not in self._files:
            self._files[name] = _ChunkFiles.of(self.path, name, self.array(name))
        files = self._files[name]
        if files is not None:
            return files.read(name, row, lo, hi)
        array = self.array(name)
        return _get(array, row if array.ndim == 1 else (row, slice(lo, hi)), name, row)

    # --- driver side ---------------------------------------------------------------------------------

    @classmethod
    def open_or_create(cls, path: str, meta: StoreMeta, specs: dict[str, ArraySpec]) -> RowStore:
        """Open the store of this fingerprint, creating it (and its arrays) if needed, and growing
        any per-row dimension that ``specs`` now asks to be larger. A store written before
        checksums existed gets its check array here, and ``every_done_row`` false: its done rows
        have none (``hvd catalog verify`` reports them)."""
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
            else:
                array = group[name]
                if str(array.dtype) != np.dtype(spec.dtype).name or array.ndim != len(spec.shape) + 1:
                    raise StoreError(f"{path}/{name} is {array.dtype} {array.shape[1:]}, expected {spec.dtype} {spec.shape}: delete it to rebuild")
                grown = tuple(max(a, b) for a, b in zip(array.shape[1:], spec.shape))
                if grown != array.shape[1:]:
                    array.resize((array.shape[0], *grown))
        store._require_checks()
        return store

    def _require_checks(self) -> None:
        """Give every output its columns in the check array (created, or widened after an output
        grew: its new blocks' columns are appended, so the rows already written keep theirs)."""
        found = self.group.attrs.get(CHECKS_KEY)
        if found is None:  # a new store, or one from before checksums
            found = {"every_done_row": not self.done().any(), "layout": {}}
        layout = {name: dict(entry) for name, entry in found.get("layout", {}).items()}
        width = self.group[CHECK].shape[1] if CHECK in self.group else 0
        for name in self.outputs():
            array = self.group[name]
            n_blocks = blocks(array)[1]
            if name not in layout:
                layout[name] = {"dims": array.ndim - 1, "extent": width, "sums": [[width + array.ndim - 1, n_blocks]]}
                width += array.ndim - 1 + n_blocks
            have = sum(n for _, n in layout[name]["sums"])
            if n_blocks > have:
                layout[name]["sums"] = [*layout[name]["sums"], [width, n_blocks - have]]
                width += n_blocks - have
        if CHECK not in self.group:
            self.group.create_array(CHECK, shape=(self.rows, width), chunks=(1, width), dtype="int64", fill_value=UNRECORDED)
        elif self.group[CHECK].shape[1] < width:
            self.group[CHECK].resize((self.group[CHECK].shape[0], width))
        if found.get("layout") != layout or CHECKS_KEY not in self.group.attrs:
            self.group.attrs[CHECKS_KEY] = {"every_done_row": found["every_done_row"], "layout": layout}

    def check_layout(self) -> dict | None:
        """The check layout (None: a store written before checksums, opened read-only)."""
        if self._checks_layout is None:
            found = self.group.attrs.get(CHECKS_KEY)
            self._checks_layout = found["layout"] if found and CHECK in self.group else {}
        return self._checks_layout or None

    def recorded(self, name: str, row: int) -> np.ndarray | None:
        """What ``write`` recorded for a row of output ``name`` (its shape, then its block sums,
        -1 where nothing was); None for a store without checksums."""
        if self.check_layout() is None:
            return None
        return self._segment(np.asarray(_get(self.array(CHECK), row, CHECK, row)), name)

    def _segment(self, vector: np.ndarray, name: str) -> np.ndarray:
        """Output ``name``'s part of a row of the check array: its extent, then its block sums."""
        entry = self.check_layout()[name]
        parts = [vector[entry["extent"] : entry["extent"] + entry["dims"]]] + [vector[a : a + n] for a, n in entry["sums"]]
        return np.concatenate(parts)

    def _put_segment(self, vector: np.ndarray, name: str, check: np.ndarray) -> None:
        entry = self.check_layout()[name]
        vector[entry["extent"] : entry["extent"] + entry["dims"]] = check[: entry["dims"]]
        k = entry["dims"]
        for a, n in entry["sums"]:
            vector[a : a + n] = check[k : k + n]
            k += n

    @classmethod
    def open(cls, path: str, mode: str = "r") -> RowStore:
        try:
            return cls(path, _open_group(path, mode))
        except Exception as exc:
            raise StoreError(f"cannot open the store at {path} ({type(exc).__name__}: {exc}); delete it to rebuild") from exc

    @property
    def rows(self) -> int:
        return self.group[TOKEN].shape[0] if TOKEN in self.group else 0

    def tokens(self) -> list[str]:
        if not self.rows:
            return []
        try:
            return list(self.group[TOKEN][:])
        except Exception as exc:
            raise StoreError(f"{self.path}: the token array cannot be read ({type(exc).__name__}: {exc}); delete the store to rebuild it") from exc

    def done(self) -> np.ndarray:
        """The done value of every row; a row whose flag cannot be decoded reads as not done."""
        if not self.rows:
            return np.zeros(0, dtype=np.int64)
        try:
            return self.group[DONE][:]
        except Exception:
            return np.array([self._done_of(row) for row in range(self.rows)], dtype=np.int64)

    def _done_of(self, row: int) -> int:
        try:
            return int(self.array(DONE)[row])
        except (IndexError, TypeError):
            raise
        except Exception:
            return 0

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

    def outputs(self) -> list[str]:
        """The per-row output arrays (neither the bookkeeping nor the check arrays)."""
        return sorted(n for n in self.group.array_keys() if n not in (TOKEN, DONE, CHECK))

    def clear(self, rows) -> None:
        """Driver side (``hvd catalog verify --repair``): reset ``rows`` to never written -- not
        done, every chunk of every output and check deleted (a row of fill values stores no chunk),
        so the next run recomputes them exactly as a first run would, without reading a damaged
        chunk (a partial write of a chunk reads it first)."""
        for name in [*self.outputs(), *([CHECK] if CHECK in self.group else [])]:
            array = self.array(name)
            for row in rows:
                array[row] = np.full(array.shape[1:], array.fill_value, dtype=array.dtype)
        for row in rows:
            self.array(DONE)[row] = 0
        self._check_row = None

    # --- worker side -----------------------------------------------------------------------------

    def write(self, row: int, values: dict[str, np.ndarray], row_hash: str) -> None:
        """Write one row's arrays and their checksums, then mark it done (a row killed half-way
        stays not done). Ragged values fill a prefix of the row: only the chunks they touch are
        written, and the check records the prefix's shape. Values for only some outputs (an edit)
        keep the others' checks."""
        if self.check_layout() is None:
            raise StoreError(f"{self.path} has no check array: open it with RowStore.open_or_create (hvd prep) before writing rows")
        check = self.array(CHECK)
        if set(values) >= set(self.check_layout()):
            vector = np.full(check.shape[1], UNRECORDED, dtype=np.int64)
        else:
            vector = np.array(_get(check, row, CHECK, row), dtype=np.int64)
        for name, value in values.items():
            array = self.array(name)
            value = np.asarray(value, dtype=array.dtype)
            if value.shape == array.shape[1:]:
                array[row] = value
            elif len(value):
                array[(row, *(slice(0, n) for n in value.shape))] = value
            self._put_segment(vector, name, row_check(value, array))
        check[row] = vector
        self._check_row = None
        self.array(DONE)[row] = done_value(row_hash)

    # --- readers ---------------------------------------------------------------------------------

    def read(self, name: str, row: int, length: int | None = None) -> np.ndarray:
        """A row of an array, or its first ``length`` entries (only those chunks are read),
        verified against the row's checksums."""
        try:
            return self.read_checked(name, row, 0, length)
        except Damage as damage:
            raise self.damage_error(damage) from damage

    def read_entry(self, name: str, row: int, entry: int) -> np.ndarray:
        """Entry ``entry`` of a row's first axis (e.g. one camera's image), verified."""
        try:
            return self.read_checked(name, row, entry, entry + 1)[0]
        except Damage as damage:
            raise self.damage_error(damage) from damage

    def read_checked(self, name: str, row: int, start: int = 0, stop: int | None = None, *, strict: bool = False) -> np.ndarray:
        """Entries ``start:stop`` of a row (the whole row for a per-row scalar), every block they
        overlap verified: the read widens to whole blocks, which costs no I/O (a chunk is read
        whole anyway). Raises ``Damage``; a done row without checksum (an old store) is read
        unverified, or raises ``Unverifiable`` when ``strict``."""
        array = self.array(name)
        check = self._check(name, row, strict)
        if check is None:
            return self._row_part(name, row, start, stop)
        if array.ndim == 1:
            value = self._row_part(name, row)
            if crc(value) != check[0]:
                raise Damage(name, row, self._mismatch(array, value, "the value"))
            return value
        dims = array.ndim - 1
        extent, sums = check[:dims], check[dims:]
        size, _ = blocks(array)
        written = int(extent[0])
        stop = array.shape[1] if stop is None else min(stop, array.shape[1])
        first, last = start // size, min(-(-stop // size), -(-written // size))
        lo = min(start, first * size)
        hi = max(stop, min(written, last * size))
        data = self._row_part(name, row, lo, hi)
        for k in range(first, last):
            a, b = k * size, min((k + 1) * size, written)
            part = data[(slice(a - lo, b - lo), *(slice(0, int(e)) for e in extent[1:]))]
            if crc(part) != sums[k]:
                raise Damage(name, row, self._mismatch(array, part, f"entries {a}:{b} of the row (its chunk {k})"))
        return data[start - lo : stop - lo]

    def verify_row(self, name: str, row: int) -> None:
        """Read and verify all that was written to a row of ``name``: ``Damage`` if anything
        differs, ``Unverifiable`` if the row has no checksum (``hvd catalog verify``)."""
        check = self._check(name, row, strict=True)
        self.read_checked(name, row, 0, None if self.array(name).ndim == 1 else int(check[0]), strict=True)

    def _check(self, name: str, row: int, strict: bool) -> np.ndarray | None:
        """The row's check of output ``name``; None when it has none to verify against."""
        if self.check_layout() is None:  # a store from before checksums, opened read-only
            if strict:
                raise Unverifiable()
            return None
        if self._check_row is None or self._check_row[0] != row:
            self._check_row = (row, self._row_part(CHECK, row))
        check = self._segment(self._check_row[1], name)
        if check[0] == UNRECORDED:
            if self._done_of(row) == 0:
                raise Damage(name, row, "the row is not computed (done is 0)")
            if self.group.attrs.get(CHECKS_KEY, {}).get("every_done_row", False):
                raise Damage(name, row, "its checksum record is missing (the row's chunk of the check array was deleted?)")
            if strict:
                raise Unverifiable()
            return None
        return check

    @staticmethod
    def _mismatch(array, part: np.ndarray, what: str) -> str:
        fill = np.asarray(array.fill_value, dtype=array.dtype)
        if part.size and (part == fill).all():
            return f"{what} read as the fill value but were written otherwise: its chunk is missing"
        return f"checksum mismatch in {what}: the chunk was overwritten or corrupted"

    def token_of(self, row: int | None) -> str:
        """The sample token of a row, or "?" if it cannot be read."""
        try:
            return str(self.array(TOKEN)[row])
        except Exception:
            return "?"

    def repair_hint(self) -> str:
        """What to run to repair this store: verify, then the prep command of its stage."""
        meta = self.group.attrs.get(META_KEY) or {}
        source = f" --source {meta['source']}" if meta.get("source") else ""
        stage = str(meta.get("stage", "all")).replace("_", "-")
        return f"run `hvd catalog verify --repair{source}` to mark the damaged rows not done, then `hvd prep {stage}{source}` to recompute them"

    def damage_error(self, damage: Damage) -> StoreError:
        """The ``StoreError`` a reader gets: store, array, row, sample token, reason, what to do."""
        if damage.row is None:
            where = f"the store-level array {damage.name}"
        else:
            where = f"row {damage.row} (sample {self.token_of(damage.row)}) of array {damage.name}"
        return StoreError(f"{self.path}: {where} is damaged: {damage.reason}; {self.repair_hint()}")

    def has_shared(self, name: str) -> bool:
        return SHARED in self.group and name in self.group[SHARED]

    def write_shared(self, name: str, data: np.ndarray) -> None:
        """A store-level array (driver side, before any row is computed), with its CRC-32."""
        array = self.group.require_group(SHARED).create_array(name, data=data, overwrite=True)
        array.attrs[CRC_KEY] = crc(np.asarray(data, dtype=array.dtype))

    def read_shared(self, name: str) -> np.ndarray:
        """A store-level array, read and verified once per process."""
        key = f"{SHARED}/{name}"
        if key not in self._arrays:
            try:
                self._arrays[key] = self.read_shared_checked(name)
            except Damage as damage:
                raise self.damage_error(damage) from damage
        return self._arrays[key]

    def read_shared_checked(self, name: str, *, strict: bool = False) -> np.ndarray:
        """A store-level array verified against its ``crc32`` attribute (``Damage`` if it differs
        or is missing; unverified without one unless ``strict``)."""
        key = f"{SHARED}/{name}"
        try:
            array = self.group[SHARED][name]
        except KeyError:
            raise Damage(key, None, "it is missing") from None
        data = _get(array, ..., key, None)
        expected = array.attrs.get(CRC_KEY)
        if expected is None:
            if strict:
                raise Unverifiable()
        elif crc(data) != expected:
            raise Damage(key, None, self._mismatch(array, data, "its values"))
        return data

    def row_of(self, token: str) -> int | None:
        """The store row of a sample token, None if the store has never seen it."""
        if self._rows is None:
            self._rows = {t: i for i, t in enumerate(self.tokens())}
        return self._rows.get(token)

