"""Typed configuration of the preprocessing flows: the CLI builds these, and Prefect deployments
take them as parameters (Prefect validates them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DaskConfig(BaseModel):
    """Where batches of keyframes run. ``address``: an existing Dask scheduler
    (``tcp://host:8786``, e.g. dask-jobqueue or Kubernetes); otherwise a ``LocalCluster`` of
    ``workers`` processes (0: one per core) is started for the run."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = None
    workers: int = Field(0, ge=0)
    threads_per_worker: int = Field(1, ge=1)


class PrepConfig(BaseModel):
    """One preprocessing run: which catalog and source, which stages, where to compute."""

    model_config = ConfigDict(extra="forbid")

    catalog: str = "data_catalog.yaml"
    source: str | None = None
    stages: list[str] = Field(default_factory=lambda: ["superpixels", "correspondences", "depth_targets"])
    dask: DaskConfig = Field(default_factory=DaskConfig)
    batch_rows: int = Field(0, ge=0, description="keyframes per Dask task (0: automatic)")
