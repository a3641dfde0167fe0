"""Checking every stored byte of a store, and repairing what can be recomputed (``hvd catalog verify``).

A row store's rows carry checksums (``pipeline.store.rowstore``): ``verify_rows`` reads every done
row whole and reports each one whose chunks are missing, undecodable or differ from what was
written, by row, sample token, array and reason, and the store-level (``shared``) arrays likewise.
``repair_rows`` resets the damaged rows to never written (not done, their chunks deleted) and marks
the store incomplete, so the next ``hvd prep`` recomputes exactly those rows, bit for bit as a first
build would. A damaged shared array (the PCA basis every row was projected with) is deleted and
every row reset: the stage's ``prepare`` fits it again.

Rows written before checksums existed cannot be verified: they are reported as *unverifiable*, and
``--repair`` resets them too (recomputing is the only way to trust them).

The sample index (a Parquet file) is read whole, its page checksums verified where it has them;
an unreadable index is deleted by ``--repair``, and the next ``hvd prep`` rebuilds it from the
dataset.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pipeline.errors import StoreError
from pipeline.store.rowstore import CHECKS_KEY, DONE, SHARED, Damage, RowStore, Unverifiable
from pipeline.store.stores import META_KEY, StoreMeta, _is_url, _url_fs, read_meta, write_zarr_meta


@dataclass(frozen=True)
class Finding:
    """One damaged row (``row`` None: a store-level array) of one array, and why."""

    row: int | None
    token: str | None
    array: str
    reason: str


@dataclass
class Report:
    """What ``verify_rows`` or ``verify_table`` found in one store."""

    path: str
    checked: int = 0  # rows (or table rows) read and verified
    damaged: list[Finding] = field(default_factory=list)
    unverifiable: list[int] = field(default_factory=list)  # done rows without checksum
    fatal: str | None = None  # damage no row reset can repair: the store must be rebuilt

    @property
    def clean(self) -> bool:
        return not (self.damaged or self.unverifiable or self.fatal)

    def damaged_rows(self) -> list[int]:
        return sorted({f.row for f in self.damaged if f.row is not None})


def verify_rows(path: str, on_progress: Callable[[int, int], None] | None = None) -> Report:
    """Read and verify every done row and every shared array of the row store at ``path``."""
    report = Report(path)
    try:
        read_meta(path)
        store = RowStore.open(path)
        tokens = store.tokens()
    except StoreError as exc:
        report.fatal = str(exc)
        return report
    if any(not t for t in tokens) or len(set(tokens)) != len(tokens):
        report.fatal = f"{path}: the token array is damaged (empty or repeated sample tokens): delete the store to rebuild it"
        return report
    _verify_shared(store, report)
    done = _done_flags(store, tokens, report)
    todo = np.flatnonzero(done)
    outputs = store.outputs()
    lost = sorted(set(store.check_layout() or {}) - set(outputs))
    if lost:
        report.fatal = f"{path}: the array(s) {', '.join(lost)} cannot be opened: delete the store to rebuild it"
        return report
    for i, row in enumerate(todo):
        for name in outputs:
            try:
                store.verify_row(name, int(row))
            except Damage as damage:
                report.damaged.append(Finding(int(row), tokens[row], name, damage.reason))
            except Unverifiable:
                if not report.unverifiable or report.unverifiable[-1] != row:
                    report.unverifiable.append(int(row))
        report.checked += 1
        if on_progress:
            on_progress(i + 1, len(todo))
    return report


def _verify_shared(store: RowStore, report: Report) -> None:
    if SHARED not in store.group:
        return
    for name in sorted(store.group[SHARED].array_keys()):
        try:
            store.read_shared_checked(name, strict=True)
        except Damage as damage:
            report.damaged.append(Finding(None, None, damage.name, damage.reason))
        except Unverifiable:
            report.damaged.append(Finding(None, None, f"{SHARED}/{name}", "no checksum recorded (written before checksums existed)"))


def _done_flags(store: RowStore, tokens: list[str], report: Report) -> np.ndarray:
    """The done flags; a flag whose chunk cannot be decoded is reported and counts as done (so
    the row is checked and reset)."""
    try:
        return store.group[DONE][:]
    except Exception:
        pass
    flags = np.zeros(len(tokens), dtype=np.int64)
    for row in range(len(tokens)):
        try:
            flags[row] = int(store.array(DONE)[row])
        except Exception as exc:
            report.damaged.append(Finding(row, tokens[row], DONE, f"undecodable chunk ({type(exc).__name__}: {exc})"))
            flags[row] = 1
    return flags


def repair_rows(report: Report) -> str:
    """Reset what ``report`` found damaged or unverifiable so the next ``hvd prep`` recomputes it;
    returns what was done. A fatal report cannot be repaired (``StoreError``)."""
    if report.fatal:
        raise StoreError(f"cannot repair: {report.fatal}")
    if report.clean:
        return "nothing to repair"
    store = RowStore.open(report.path, mode="r+")
    rows = set(report.damaged_rows()) | set(report.unverifiable)
    shared = [f.array for f in report.damaged if f.row is None]
    if shared:  # every row was computed with the shared arrays: fit them again, recompute all
        del store.group[SHARED]
        rows |= {int(r) for r in np.flatnonzero(_done_flags(store, store.tokens(), Report(report.path)))}
    store.clear(sorted(rows))
    meta = StoreMeta.model_validate(store.group.attrs[META_KEY])
    rows_done = int(np.count_nonzero(store.done()))
    write_zarr_meta(store.group, meta.model_copy(update={"rows_done": rows_done, "complete": False}))
    store.group.attrs[CHECKS_KEY] = {**(store.group.attrs.get(CHECKS_KEY) or {}), "every_done_row": True}  # rows without checksum were reset
    what = f"{len(rows)} row(s) marked not done and their chunks deleted"
    if shared:
        what += f"; shared array(s) {', '.join(shared)} deleted (refitted by the next run)"
    return what


def verify_table(path: str) -> Report:
    """Read the Parquet store at ``path`` whole, verifying the page checksums it has."""
    import pyarrow.parquet as pq

    report = Report(path)
    try:
        read_meta(path)
        if _is_url(path):
            fs, inner = _url_fs(path)
            table = pq.read_table(inner, filesystem=fs, page_checksum_verification=True)
        else:
            table = pq.read_table(path, page_checksum_verification=True)
    except Exception as exc:  # StoreError from the footer, or pyarrow's errors from the pages
        report.fatal = f"{path} cannot be read ({type(exc).__name__}: {exc})"
        return report
    report.checked = table.num_rows
    return report


def repair_table(report: Report) -> str:
    """Delete an unreadable index: it is derived from the dataset, and the next ``hvd prep``
    (any stage) builds it again."""
    if report.clean:
        return "nothing to repair"
    if _is_url(report.path):
        fs, inner = _url_fs(report.path)
        fs.rm(inner)
    else:
        os.remove(report.path)
    return "deleted (the next `hvd prep` rebuilds it from the dataset)"
