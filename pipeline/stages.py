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


KNOWN_STAGES = ("index",)


def stage_info(name: str) -> StageInfo:
    """The ``StageInfo`` of stage ``name`` (imported lazily: stage modules import heavy libraries)."""
    match name:
        case "index":
            from pipeline import index

            return index.STAGE
        case _:
            raise CatalogError(f"unknown stage {name!r}; known stages: {', '.join(KNOWN_STAGES)}")
