"""The stages hvd knows, by the name used in ``data_catalog.yaml``, the flow name and the CLI."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from pipeline.errors import CatalogError


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
            from pipeline import index as module
        case "superpixels":
            from pipeline import superpixels as module
        case "correspondences":
            from pipeline import correspondences as module
        case "depth_targets":
            from pipeline import depth_targets as module
        case "teacher_cache":
            from pipeline import teacher_cache as module
        case _:
            raise CatalogError(f"unknown stage {name!r}; known stages: {', '.join(KNOWN_STAGES)}")
    return module
