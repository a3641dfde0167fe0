"""Environment defaults for running Prefect from the command line. Called by the CLI before it
imports Prefect (never at import time): quiet logs, patience for the local API server to start."""

from __future__ import annotations

import logging
import os


def configure_prefect() -> None:
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # also read by worker processes
    os.environ.setdefault("DASK_DISTRIBUTED__WORKER__DAEMON", "true")


def quiet_run_logs() -> None:
    """Keep flow- and task-run logs (a failed stage's traceback among them) off the console: they
    still reach the Prefect API and UI, and the CLI prints its own progress and error summary."""
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(name).propagate = False
