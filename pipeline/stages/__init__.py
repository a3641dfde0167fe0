"""The stages hvd knows, by the name used in ``data_catalog.yaml``, the flow name and the CLI: one
module per stage (``index``, ``superpixels``, ``correspondences``, ``depth_targets``,
``teacher_cache``), and the table that lists them.

The store layer (``pipeline.store``) fingerprints, locates and fills the artifacts of any stage but
names none: it is given ``STAGES``. ``Catalog`` is the store's catalog bound to this table, the one
the CLI, the flows and training load. Stage modules import ``StageInfo`` from
``pipeline.store.stage``, never this module, so the table and its stages form no loop.
"""

from __future__ import annotations

from typing import ClassVar

from pipeline.errors import CatalogError
from pipeline.stages.index import ensure_index
from pipeline.store import catalog as store_catalog
from pipeline.store.stage import StageInfo, StageTable

KNOWN_STAGES = ("index", "superpixels", "correspondences", "depth_targets", "teacher_cache")
PREP_STAGES = ("superpixels", "correspondences", "depth_targets", "teacher_cache")  # per keyframe, inputs first


def stage_info(name: str) -> StageInfo:
    """The ``StageInfo`` of stage ``name`` (imported lazily: stage modules import heavy libraries)."""
    return stage_module(name).STAGE


def stage_module(name: str):
    """The module implementing stage ``name``: ``STAGE``, and for per-keyframe stages ``specs``
    (the store's arrays), ``compute(record, params, inputs, store)`` (one keyframe's output) and
    optionally ``prepare(store, params, index)`` (driver-side set-up before any row; returns notes)."""
    match name:
        case "index":
            from pipeline.stages import index as module
        case "superpixels":
            from pipeline.stages import superpixels as module
        case "correspondences":
            from pipeline.stages import correspondences as module
        case "depth_targets":
            from pipeline.stages import depth_targets as module
        case "teacher_cache":
            from pipeline.stages import teacher_cache as module
        case _:
            raise CatalogError(f"unknown stage {name!r}; known stages: {', '.join(KNOWN_STAGES)}")
    return module


STAGES = StageTable(names=KNOWN_STAGES, module=stage_module, ensure_index=ensure_index)


class Catalog(store_catalog.Catalog):
    """``data_catalog.yaml`` over hvd's stages (``Catalog.load(path)``); everything else is
    ``pipeline.store.catalog.Catalog``."""

    stages: ClassVar[StageTable] = STAGES
