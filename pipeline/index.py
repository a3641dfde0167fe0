"""The sample index: one Parquet row per keyframe of a nuScenes-format dataset (real or synthetic),
with the paths, timestamps and calibration every later stage reads instead of the devkit."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from pipeline.stages import StageInfo

VERSION = 1

CAMERAS: tuple[str, ...] = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_FRONT_LEFT",
)


class IndexParams(BaseModel):
    """How the index is built. ``allow_missing`` drops keyframes whose files are missing or
    truncated (recorded in the index) instead of refusing to build."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_missing: bool = False


STAGE = StageInfo(
    name="index",
    version=VERSION,
    params=IndexParams,
    suffix=".parquet",
    description="one row per keyframe: paths, timestamps, calibration, ego poses, split",
)
