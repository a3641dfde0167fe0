"""Reading nuScenes-format datasets: opening one through nuscenes-devkit, the raw sensor files of a
keyframe, scene splits, the lidarseg classes and rigid-transform geometry.

Depends on nothing else in ``pipeline`` but ``pipeline.errors``.
"""
