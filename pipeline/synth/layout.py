"""The street's cross-section and its gently curving centreline, in the global frame (metres).

Lateral offsets are measured along global y from the centreline y_c(x); the road heads along +x.
The map origin is at (0, 0), so the whole world lies at positive coordinates as nuScenes maps need.
"""

from __future__ import annotations

import numpy as np

from pipeline.data.classes import LIDARSEG_INDEX

CENTRE_Y_M = 120.0  # mean y of the centreline
CURVE_AMPLITUDE_M = 6.0
CURVE_WAVELENGTH_M = 420.0
WORLD_START_X_M = 150.0  # where the first scene starts
SCENE_SPACING_M = 420.0  # scenes are this far apart along the road (never see each other)

LANES_M = (-5.25, -1.75, 1.75, 5.25)  # lane centres; traffic keeps right, heading +x at y < 0
EGO_LANE_M = -1.75
ROAD_HALF_M = 9.5  # four lanes (7 m each side of the centre) plus a 2.5 m parking strip
PARKING_M = 8.25
SIDEWALK_HALF_M = 13.0
POLE_LATERAL_M = 9.9
TREE_LATERAL_M = 15.0
BUILDING_MIN_LATERAL_M = 17.5

DRIVEABLE = LIDARSEG_INDEX["flat.driveable_surface"]
SIDEWALK = LIDARSEG_INDEX["flat.sidewalk"]
TERRAIN = LIDARSEG_INDEX["flat.terrain"]


def centre_y(x: np.ndarray | float) -> np.ndarray | float:
    """y of the road centreline at x."""
    return CENTRE_Y_M + CURVE_AMPLITUDE_M * np.sin(2 * np.pi * np.asarray(x) / CURVE_WAVELENGTH_M)


def heading(x: np.ndarray | float) -> np.ndarray | float:
    """Yaw (radians) of the centreline's tangent at x."""
    slope = CURVE_AMPLITUDE_M * 2 * np.pi / CURVE_WAVELENGTH_M * np.cos(
        2 * np.pi * np.asarray(x) / CURVE_WAVELENGTH_M
    )
    return np.arctan(slope)


def lateral(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed lateral offset of (x, y) from the centreline (positive to the left of +x)."""
    return y - centre_y(x)


def ground_class(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """lidarseg class of the ground at (x, y): driveable surface, sidewalk or terrain."""
    off = np.abs(lateral(x, y))
    return np.where(off < ROAD_HALF_M, DRIVEABLE, np.where(off < SIDEWALK_HALF_M, SIDEWALK, TERRAIN)).astype(
        np.uint8
    )


def place(x: float, lateral_m: float) -> tuple[float, float, float]:
    """(x, y, yaw) of a point ``lateral_m`` off the centreline at x, aligned with the road."""
    return float(x), float(centre_y(x) + lateral_m), float(heading(x))
