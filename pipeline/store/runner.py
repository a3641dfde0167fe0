"""Running a per-keyframe stage: plan the rows to compute, compute batches of rows (anywhere: in
this process, or on Dask workers through ``flows``), commit the artifact last.

- ``plan`` (driver): index the source, open or create the store for the artifact's fingerprint,
  give new keyframes rows, and list the rows not yet done for their current content;
- ``run_job`` (worker): compute and write each row of a batch; a row that fails (a missing or
  corrupt file) is reported with its sample token and does not stop the others;
- ``commit`` (driver): record what is done; ``complete`` only when every row of the index is.

The runner names no stage: it reaches each one through the catalog's stage table
(``pipeline.store.stage.StageTable``), which every job carries to its worker. Nothing here imports
Prefect or Dask.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pipeline.errors import HvdError, RowError, StoreError
from pipeline.store.rowstore import RowStore
from pipeline.store.stage import StageTable
from pipeline.store.stores import StoreMeta, code_version, utc_now


@dataclass
class Plan:
    artifact: object  # pipeline.store.catalog.Artifact
    index: object  # the source's sample index (pipeline.stages.index.SampleIndex)
    store: RowStore
    rows: np.ndarray  # store row of each index row
    todo: np.ndarray  # index rows to compute
    inputs: dict[str, str]  # input artifact name -> store path
    stages: StageTable
    hashes: list[str]  # what each index row must be done for in this stage (``row_hashes``)
    notes: list[str] = field(default_factory=list)  # what the stage wants the user to know


@dataclass(frozen=True)
class Job:
    """A batch of rows for one worker: everything it needs, picklable, no catalog or index."""

    stage: str
    stages: StageTable
    store: str
    params: dict
    inputs: dict[str, str]
    rows: list[tuple[int, dict]]  # (store row, index record)


@dataclass
class Summary:
    artifact: str
    path: str
    total: int
    computed: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    complete: bool = False
    notes: list[str] = field(default_factory=list)


class StageFailed(HvdError):
    """Some rows failed; the others are stored and the artifact stays incomplete."""

    def __init__(self, summaries: list[Summary]) -> None:
        self.summaries = summaries
        lines = [f"{s.artifact}: {len(s.failed)} of {s.total} keyframes failed:" + "".join(f"\n  {m}" for m in s.failed[:20]) for s in summaries if s.failed]
        super().__init__("\n".join(lines) + "\nFix or replace those files and run the same command again: only the failed keyframes are computed.")


def _meta(artifact, index, done: int, created: str | None, extra: dict | None = None) -> StoreMeta:
    return StoreMeta(
        fingerprint=artifact.fingerprint,
        stage=artifact.stage.name,
        version=artifact.stage.version,
        source=artifact.source.name,
        params=artifact.params.model_dump(mode="json"),
        inputs=artifact.fingerprint_inputs(),
        created=created or utc_now(),
        code_version=code_version(),
        rows_total=len(index),
        rows_done=done,
        complete=done == len(index),
        extra=extra or {},
    )


def plan(catalog, name: str, source: str | None = None, on_index_progress=None) -> Plan:
    artifact = catalog.artifact(name, source)
    index, _ = catalog.stages.ensure_index(catalog, artifact.source.name, on_progress=on_index_progress)
    inputs = {}
    for dep_name, dep in artifact.inputs.items():
        if dep.stage.name == "index":
            continue
        dep_meta = RowStore.open(dep.path).group.attrs.get("hvd") if _exists(dep.path) else None
        if dep_meta is None:
            raise StoreError(f"{name} needs {dep_name}, which is not built yet: run `hvd prep {dep.stage.name.replace('_', '-')}` first")
        inputs[dep_name] = dep.path
    module = catalog.stages.module(artifact.stage.name)
    store = RowStore.open_or_create(artifact.path, _meta(artifact, index, 0, None), module.specs(artifact.params, index))
    notes = module.prepare(store, artifact.params, index) if hasattr(module, "prepare") else []
    rows = store.assign(index.tokens)
    hashes = row_hashes(module, artifact.params, index)
    todo = np.flatnonzero(store.pending(rows, hashes))
    return Plan(artifact, index, store, rows, todo, inputs, catalog.stages, hashes, notes)


def up_to_date(catalog, name: str, source: str | None = None, index=None) -> Summary | None:
    """The summary of a stage with nothing to compute (its store complete for its fingerprint and
    every row done for its current inputs), else None. Reads only: no store is created or
    changed, so callers check this before starting anything (``hvd prep`` starts neither Prefect
    nor Dask when every stage is up to date). ``index``: the source's index, if already loaded."""
    from pipeline.store.stores import read_meta

    artifact = catalog.artifact(name, source)
    if not _exists(artifact.path):
        return None
    meta = read_meta(artifact.path)
    if meta is None or not meta.complete or meta.fingerprint != artifact.fingerprint:
        return None
    if index is None:
        index, _ = catalog.stages.ensure_index(catalog, artifact.source.name)
    store = RowStore.open(artifact.path)
    rows = [store.row_of(token) for token in index.tokens]
    if any(row is None for row in rows):
        return None
    hashes = row_hashes(catalog.stages.module(artifact.stage.name), artifact.params, index)
    if store.pending(np.array(rows, dtype=np.int64), hashes).any():
        return None
    return Summary(artifact=name, path=artifact.path, total=len(index), skipped=len(index), complete=True)


def row_hashes(module, params, index) -> list[str]:
    """What each index row of a stage is done for: its records and the state of the files the stage
    reads (the module's ``reads(params)``; every file if it names none), so a changed file makes
    stale exactly the rows, and the stages, that read it."""
    return index.row_hashes(module.reads(params) if hasattr(module, "reads") else None)


def _exists(path: str) -> bool:
    import os

    return os.path.exists(path) if "://" not in path else True


def jobs(p: Plan, batch_rows: int) -> list[Job]:
    fields = type(p.artifact.params).model_fields  # declared ones: computed fields are recomputed
    params = {k: v for k, v in p.artifact.params.model_dump(mode="json").items() if k in fields}
    todo = [int(i) for i in p.todo]
    return [
        Job(p.artifact.stage.name, p.stages, p.store.path, params, p.inputs, [(int(p.rows[i]), _record(p, i)) for i in todo[k : k + batch_rows]])
        for k in range(0, len(todo), batch_rows)
    ]


def _record(p: Plan, i: int) -> dict:
    return p.index.record(i) | {"row_hash": p.hashes[i]}


def run_job(job: Job) -> list[dict]:
    """Compute and write every row of ``job``; one result per row: token, ok, error."""
    module = job.stages.module(job.stage)
    params = module.STAGE.params.model_validate(job.params)
    store = RowStore.open(job.store, mode="r+")
    inputs = {name: RowStore.open(path) for name, path in job.inputs.items()}
    results = []
    for row, record in job.rows:
        where = f"sample {record['token']} ({record['scene']})"
        try:
            if record.get("problem"):  # refused by the index: none of its files is opened
                raise RowError(record["problem"])
            store.write(row, module.compute(record, params, inputs, store), record["row_hash"])
            results.append({"token": record["token"], "ok": True, "error": None})
        except RowError as exc:
            results.append({"token": record["token"], "ok": False, "error": f"{where}: {exc}"})
        except Exception as exc:  # a bug, not bad input: keep the traceback for the report
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            results.append({"token": record["token"], "ok": False, "error": f"{where}: unexpected {detail}\n{traceback.format_exc()}"})
    return results


def commit(p: Plan, results: list[dict]) -> Summary:
    """Record the artifact's state after a run (the driver alone writes the metadata)."""
    done = int((~p.store.pending(p.rows, p.hashes)).sum())
    created = (p.store.group.attrs.get("hvd") or {}).get("created")
    p.store.commit(_meta(p.artifact, p.index, done, created, {"updated": utc_now()}))
    failed = [r["error"] for r in results if not r["ok"]]
    return Summary(
        artifact=p.artifact.name,
        path=p.store.path,
        total=len(p.index),
        computed=sum(r["ok"] for r in results),
        skipped=len(p.index) - len(p.todo),
        failed=failed,
        complete=done == len(p.index),
        notes=p.notes,
    )


def run_local(catalog, name: str, source: str | None = None, batch_rows: int = 4, on_progress: Callable[[int, int], None] | None = None) -> Summary:
    """Run a stage in this process, batch by batch (tests, debugging, and machines without Dask)."""
    p = plan(catalog, name, source)
    results: list[dict] = []
    for job in jobs(p, batch_rows):
        results += run_job(job)
        if on_progress:
            on_progress(len(results), len(p.todo))
    return commit(p, results)
