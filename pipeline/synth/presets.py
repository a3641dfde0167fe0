"""Dataset sizes, from ``tiny`` (tests, seconds) to ``mini`` (v1.0-mini-sized, 1600x900 images)."""

from __future__ import annotations

from dataclasses import dataclass

# Bumped whenever the generated files change for the same (preset, seed): it is part of the
# dataset's identity (synth/manifest.json), hence of every fingerprint derived from it.
GENERATOR_VERSION = 2  # 2: scenes named from the devkit's split lists (scene-0061, scene-0103, ...)


@dataclass(frozen=True)
class SynthPreset:
    """How much to generate. Timing follows nuScenes: keyframes at 2 Hz, LiDAR sweeps at 20 Hz,
    optional camera sweeps at 12 Hz."""

    name: str
    n_scenes: int
    keyframes_per_scene: int
    image_width: int
    image_height: int
    lidar_azimuth_steps: int = 1084  # 20 Hz HDL-32E: ~0.33 degree steps
    camera_sweeps: bool = False
    version: str = "v1.0-mini"

    def identity(self, seed: int) -> dict:
        """What decides the content of every scene (the catalog fingerprints this). The number of
        scenes is not part of it: a dataset grown by more scenes keeps its identity, its existing
        files and tokens, so stores built from it only compute the new keyframes."""
        return {
            "generator_version": GENERATOR_VERSION,
            "seed": seed,
            "keyframes_per_scene": self.keyframes_per_scene,
            "image_size": [self.image_height, self.image_width],
            "lidar_azimuth_steps": self.lidar_azimuth_steps,
            "camera_sweeps": self.camera_sweeps,
            "version": self.version,
        }


PRESETS: dict[str, SynthPreset] = {
    "tiny": SynthPreset("tiny", n_scenes=2, keyframes_per_scene=4, image_width=320, image_height=180),
    "demo": SynthPreset("demo", n_scenes=4, keyframes_per_scene=20, image_width=640, image_height=360),
    # the transfer experiment (bench/transfer.py): more scenes, half the LiDAR azimuth resolution,
    # so a few dozen pretraining and fine-tuning runs fit in about an hour on a 2-core CPU
    "transfer": SynthPreset("transfer", n_scenes=8, keyframes_per_scene=8, image_width=320, image_height=180, lidar_azimuth_steps=542),
    "mini": SynthPreset("mini", n_scenes=10, keyframes_per_scene=40, image_width=1600, image_height=900),
}
