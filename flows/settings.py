"""Environment defaults for running Prefect from the command line. Called by the CLI before it
imports Prefect (never at import time): quiet logs, patience for the local API server to start."""

from __future__ import annotations

import os


def configure_prefect() -> None:
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # also read by worker processes
    os.environ.setdefault("DASK_DISTRIBUTED__WORKER__DAEMON", "true")
