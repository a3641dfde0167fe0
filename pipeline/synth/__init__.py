"""A synthetic driving world written in the exact nuScenes on-disk format (``hvd data synth``).

One procedural street (road, sidewalks, terrain, buildings, trees, poles, parked and moving
vehicles, pedestrians, barriers, cones) is ray-cast by a 32-beam spinning LiDAR and six cameras
from the same geometry, so every LiDAR point and every pixel agree on what they see. Everything is
deterministic from (preset, seed).
"""

from pipeline.synth.presets import PRESETS, SynthPreset

__all__ = ["PRESETS", "SynthPreset"]
