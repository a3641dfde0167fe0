"""Preprocessing flows: one Prefect flow per stage (``superpixels``, ``correspondences``,
``depth-targets``), each fanning batches of keyframes out to Dask through prefect-dask's
``DaskTaskRunner``, and the ``prep`` flow that runs stages in dependency order on one Dask cluster.

The stage logic is ``pipeline.store.runner``: a flow plans on the driver, maps ``compute-rows``
tasks over batches, and commits the artifact last. A stage with failed keyframes ends Failed (its
other keyframes are stored); ``prep`` still runs the remaining stages, then fails listing every bad
file.
"""

from __future__ import annotations

import logging
import math
import os
from contextlib import contextmanager
from dataclasses import asdict

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.futures import as_completed
from prefect_dask import DaskTaskRunner

from flows import progress
from flows.config import DaskConfig, PrepConfig
from pipeline.stages import Catalog
from pipeline.stages import PREP_STAGES as STAGE_ORDER
from pipeline.store import runner
from pipeline.store.runner import StageFailed, Summary


@task(name="compute-rows", cache_policy=NONE, retries=0)
def compute_rows(job: runner.Job) -> list[dict]:
    """Compute and store a batch of keyframes on a Dask worker."""
    return runner.run_job(job)


def _batch_rows(config: PrepConfig, todo: int, workers: int) -> int:
    if config.batch_rows:
        return config.batch_rows
    return max(1, min(16, math.ceil(todo / (4 * max(workers, 1)))))


def _run_stage(stage: str, config: PrepConfig, workers: int) -> dict:
    catalog = Catalog.load(config.catalog)
    plan = runner.plan(catalog, stage, config.source)
    todo = len(plan.todo)
    progress.report(stage, 0, todo)
    results: list[dict] = []
    futures = [compute_rows.submit(job) for job in runner.jobs(plan, _batch_rows(config, todo, workers))]
    for future in as_completed(futures):
        results += future.result()
        progress.report(stage, len(results), todo)
    summary = runner.commit(plan, results)
    if summary.failed:
        raise StageFailed([summary])
    return asdict(summary)


def _stage_flow(stage: str):
    name = stage.replace("_", "-")

    @flow(name=name, flow_run_name=f"{name} {{config.source}}", validate_parameters=True)
    def stage_flow(config: PrepConfig, workers: int = 1) -> dict:
        return _run_stage(stage, config, workers)

    stage_flow.__doc__ = f"Compute the {name} store for every keyframe of the source not yet done."
    return stage_flow


STAGE_FLOWS = {stage: _stage_flow(stage) for stage in STAGE_ORDER}


def summary_line(s: dict) -> str:
    """One line per stage: what was computed, skipped and failed (logged to the flow run)."""
    state = "complete" if s["complete"] else "incomplete"
    return f"{s['artifact']}: {s['computed']} computed, {s['skipped']} already done, {len(s['failed'])} failed of {s['total']} keyframes -> {s['path']} ({state})"


@contextmanager
def dask_cluster(config: DaskConfig):
    """(scheduler address, workers): the configured scheduler, or a LocalCluster for this run."""
    if config.address:
        from distributed import Client

        with Client(config.address, timeout="30s") as client:
            yield config.address, max(len(client.scheduler_info().get("workers", {})), 1)
        return
    from distributed import LocalCluster

    logging.getLogger("distributed").setLevel(logging.WARNING)
    workers = config.workers or os.cpu_count() or 1
    with LocalCluster(
        n_workers=workers,
        threads_per_worker=config.threads_per_worker,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.WARNING,
    ) as cluster:
        yield cluster.scheduler_address, workers


@contextmanager
def api_for_workers():
    """Make Dask workers report task runs to the Prefect API this process uses.

    Each task carries the driver's Prefect settings to its worker. Without ``PREFECT_API_URL`` the
    driver talks to a temporary server of its own, which those settings do not name, so every
    worker process started another temporary server (slow, and its task runs were invisible): name
    the driver's server instead. On other machines it is unreachable (it listens on 127.0.0.1), so
    a real cluster sets ``PREFECT_API_URL`` to a server the workers can reach.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        url = str(client.api_url).rstrip("/")
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield


@flow(name="prep", validate_parameters=True)
def prep(config: PrepConfig) -> list[dict]:
    """Run the configured stages in dependency order on one Dask cluster."""
    unknown = [s for s in config.stages if s not in STAGE_FLOWS]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; known: {list(STAGE_FLOWS)}")
    # resolved here, on the driver: workers get absolute paths only (they may run elsewhere)
    config = config.model_copy(update={"catalog": str(Catalog.load(config.catalog).path)})
    stages = [s for s in STAGE_ORDER if s in config.stages]
    logger = get_run_logger()
    summaries: list[dict] = []
    failed: list[Summary] = []
    with api_for_workers(), dask_cluster(config.dask) as (address, workers):
        done = 0
        for stage in stages:
            stage_flow = STAGE_FLOWS[stage].with_options(task_runner=DaskTaskRunner(address=address))
            state = stage_flow(config, workers, return_state=True)
            outcome = state.result(raise_on_failure=False)
            if isinstance(outcome, StageFailed):
                failed += outcome.summaries
                summaries += [asdict(s) for s in outcome.summaries]
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                summaries.append(outcome)
            for summary in summaries[done:]:
                logger.info(summary_line(summary))
            done = len(summaries)
    if failed:
        raise StageFailed(failed)
    return summaries
