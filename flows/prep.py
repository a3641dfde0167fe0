"""Preprocessing flows: one Prefect flow per stage (``superpixels``, ``correspondences``,
``depth-targets``), each fanning batches of keyframes out to Dask through prefect-dask's
``DaskTaskRunner``, and the ``prep`` flow that runs stages in dependency order on one Dask cluster.

The stage logic is ``pipeline.runner``: a flow plans on the driver, maps ``compute-rows`` tasks
over batches, and commits the artifact last. A stage with failed keyframes ends Failed (its other
keyframes are stored); ``prep`` still runs the remaining stages, then fails listing every bad file.
"""

from __future__ import annotations

import logging
import math
import os
from contextlib import contextmanager
from dataclasses import asdict

from prefect import flow, task
from prefect.cache_policies import NONE
from prefect.futures import as_completed
from prefect_dask import DaskTaskRunner

from flows import progress
from flows.config import DaskConfig, PrepConfig
from pipeline import runner
from pipeline.catalog import Catalog
from pipeline.runner import StageFailed, Summary
from pipeline.stages import PREP_STAGES as STAGE_ORDER


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


@flow(name="prep", validate_parameters=True)
def prep(config: PrepConfig) -> list[dict]:
    """Run the configured stages in dependency order on one Dask cluster."""
    unknown = [s for s in config.stages if s not in STAGE_FLOWS]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; known: {list(STAGE_FLOWS)}")
    stages = [s for s in STAGE_ORDER if s in config.stages]
    summaries: list[dict] = []
    failed: list[Summary] = []
    with dask_cluster(config.dask) as (address, workers):
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
    if failed:
        raise StageFailed(failed)
    return summaries
