"""``hvd data``: datasets (the built-in synthetic nuScenes-format world)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.progress import bar_updater, console, progress_bar

from pipeline.synth import PRESETS

app = typer.Typer(help="Datasets: generate the built-in synthetic nuScenes-format world.", no_args_is_help=True)


def _preset_help() -> str:
    rows = [
        f"{p.name}: {p.n_scenes} scenes x {p.keyframes_per_scene} keyframes, {p.image_width}x{p.image_height} images"
        for p in PRESETS.values()
    ]
    return "Size of the dataset. " + "; ".join(rows) + "."


@app.command()
def synth(
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Dataset root to write (default: data/synth-PRESET).", show_default=False)] = None,
    preset: Annotated[str, typer.Option("--preset", "-p", help=_preset_help())] = "demo",
    seed: Annotated[int, typer.Option("--seed", help="Random seed: the same seed and preset give byte-identical files.")] = 0,
    version: Annotated[Optional[str], typer.Option("--version", help="v1.0-mini (at most 10 scenes, named as the devkit's mini_train / mini_val) or v1.0-trainval (named as its train / val scenes). Default: the preset's.", show_default=False)] = None,
    scenes: Annotated[Optional[int], typer.Option("--scenes", min=1, help="Number of scenes (default: the preset's). Asking for more scenes than --out holds grows the dataset: only the new scenes are rendered, existing files and tokens stay as they are.", show_default=False)] = None,
    workers: Annotated[int, typer.Option("--workers", "-j", help="Parallel render processes (default: all cores).", show_default=False)] = 0,
    camera_sweeps: Annotated[Optional[bool], typer.Option("--camera-sweeps/--no-camera-sweeps", help="Also render 12 Hz camera sweeps between keyframes (6x the camera rendering). Default: off.", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing synthetic dataset in --out.")] = False,
    format: Annotated[str, typer.Option("--format", help="nuscenes (the nuScenes layout, for everything) or semantickitti (SemanticKITTI's layout, a 64-beam HDL-64E at KITTI's mounting: for fine-tuning and evaluation with --dataset semantickitti).")] = "nuscenes",
) -> None:
    """Generate a synthetic driving dataset in the exact nuScenes on-disk format.

    An ego vehicle drives down a procedural street (road, sidewalks, terrain, buildings, trees, poles,
    parked and moving vehicles, pedestrians, barriers, cones). A 32-beam spinning LiDAR (20 Hz sweeps,
    keyframes at 2 Hz) and six cameras with nuScenes mounting are ray-cast against the same geometry, so
    LiDAR points and pixels agree exactly; each camera fires at its own timestamp with its own ego pose.
    Writes the 13 tables plus lidarseg.json under the version folder, samples/, sweeps/, maps/ and
    lidarseg/ -- loadable with nuscenes-devkit's NuScenes(version, dataroot) -- plus synth/ (the
    manifest and per-pixel ground-truth class maps for tests and benchmarks).

    Scenes are named from the devkit's own split lists (scene-0061, scene-0103, ... for v1.0-mini), so
    create_splits_scenes() places each of them and the devkit's LidarSegEval runs on the data.

    Re-running with the same options is instant once complete; an interrupted run resumes.

    With --format semantickitti the same world is written as SemanticKITTI instead (default --out
    data/synth-kitti-PRESET): one sequence per scene (00, 08, 01, 02, ...: the first trains, the second
    validates), frames at 10 Hz, sequences/NN/velodyne/*.bin, labels/*.label (SemanticKITTI's raw
    label ids and instance ids), calib.txt, poses.txt, times.txt.
    """
    from dataclasses import replace

    from pipeline.data.splits import synthetic_scene_names
    from pipeline.errors import HvdError
    from pipeline.synth.generate import generate

    if preset not in PRESETS:
        raise HvdError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    if format not in ("nuscenes", "semantickitti"):
        raise HvdError(f"unknown --format {format!r}; choose nuscenes or semantickitti")
    spec = PRESETS[preset]
    if camera_sweeps is not None:
        spec = replace(spec, camera_sweeps=camera_sweeps)
    if scenes is not None:
        spec = replace(spec, n_scenes=scenes)
    if version is not None:
        spec = replace(spec, version=version)
    workers = workers or os.cpu_count() or 1
    if format == "semantickitti":
        _synth_semantickitti(out or Path("data") / f"synth-kitti-{preset}", spec, preset, seed, workers, force)
        return
    try:
        synthetic_scene_names(spec.version, spec.n_scenes)
    except ValueError as exc:
        raise HvdError(f"hvd data synth: {exc}") from None
    out = out or Path("data") / f"synth-{preset}"
    start = time.monotonic()
    with progress_bar("synth", "keyframe") as bar:
        manifest = generate(out, spec, seed=seed, workers=workers, force=force, on_progress=bar_updater(bar, preset))
    if manifest.get("already_complete"):
        console.print(f"{out}: already holds this dataset ({spec.n_scenes} scenes of '{preset}', seed {seed}); nothing to do (--force regenerates)")
        return
    counts = manifest["counts"]
    console.print(
        f"wrote {out} ({spec.version}): {counts['scene']} scenes, {counts['sample']} keyframes, "
        f"{counts['sample_data']} sample_data, {counts['sample_annotation']} annotations "
        f"in {time.monotonic() - start:.1f} s"
    )


def _synth_semantickitti(out: Path, spec, preset: str, seed: int, workers: int, force: bool) -> None:
    from pipeline.synth import semantickitti

    start = time.monotonic()
    with progress_bar("synth", "frame") as bar:
        manifest = semantickitti.generate(out, spec, seed=seed, workers=workers, force=force, on_progress=bar_updater(bar, preset))
    if manifest.get("already_complete"):
        console.print(f"{out}: already holds this dataset ('{preset}' in SemanticKITTI's format, seed {seed}); nothing to do (--force regenerates)")
        return
    counts = manifest["counts"]
    sequences = ", ".join(manifest["identity"]["sequences"])
    console.print(
        f"wrote {out} (SemanticKITTI): sequences {sequences}, {counts['frames']} frames of {counts['beams']} beams x "
        f"{counts['azimuth_steps']} azimuth steps in {time.monotonic() - start:.1f} s"
    )
