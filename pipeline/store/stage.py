"""What the store layer needs to know about a stage, and the table of stages it is given.

The catalog and the runner fingerprint, locate, plan and commit artifacts of any stage, but name
none: ``pipeline.stages`` hands them its table (``pipeline.stages.STAGES``), and the stage modules
import ``StageInfo`` from here. So the store layer never imports a stage, and a stage module never
imports the table that lists it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class StageInfo:
    """What the catalog needs to know about a stage to fingerprint and locate its artifact.

    ``version`` is bumped whenever the meaning of the stage's output changes; ``params`` is the
    frozen pydantic model of its parameters; ``suffix`` is the store's file extension.
    """

    name: str
    version: int
    params: type[BaseModel]
    suffix: str
    description: str


@dataclass(frozen=True)
class StageTable:
    """The stages a catalog may name and how the runner reaches them. Picklable (its functions are
    module-level), so a batch of rows sent to a Dask worker carries it.

    - ``names``: every stage, by the name used in ``data_catalog.yaml``;
    - ``module(name)``: the module implementing a stage: ``STAGE`` (its ``StageInfo``), and for
      per-keyframe stages ``specs(params, index)`` (the store's arrays), ``compute(record, params,
      inputs, store)`` (one keyframe's output) and optionally ``prepare(store, params, index)``
      (driver-side set-up before any row; returns notes for the user);
    - ``ensure_index(catalog, source, on_progress=...)``: ``(index, built)``, the source's sample
      index, built first when missing or out of date: the rows every per-keyframe stage fills.
    """

    names: tuple[str, ...]
    module: Callable[[str], ModuleType]
    ensure_index: Callable[..., tuple[Any, bool]]

    def info(self, name: str) -> StageInfo:
        """The ``StageInfo`` of stage ``name``."""
        return self.module(name).STAGE
