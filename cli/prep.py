"""``hvd prep``: the preprocessing stages that build the stores training reads."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from cli.options import CatalogOption, SourceOption
from cli.progress import bar_updater, console, progress_bar
from pipeline.stages import PREP_STAGES  # not flows: Prefect must not load before configure_prefect

app = typer.Typer(help="Preprocessing stages: build the fingerprinted stores the training stage reads.", no_args_is_help=True)
@app.command()
def index(
    catalog: CatalogOption = None,
    source: SourceOption = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Rebuild even if the index is up to date.")] = False,
) -> None:
    """Build the sample index: one row per keyframe with paths, timestamps, calibration and split.

    Reads the dataset through nuscenes-devkit and checks every file a keyframe needs (LiDAR sweep,
    lidarseg labels, six images) and every record it uses: a missing or truncated file, a path
    outside the dataroot, a bad calibration or ego pose, a token used twice is reported by name and
    sample token; scenes without keyframes are reported and left out of the splits. Every other
    stage runs this automatically; it is rebuilt when the dataset's tables or any input file's size
    or modification time change (only the keyframes whose files changed are then recomputed).
    """
    from pipeline.stages import Catalog
    from pipeline.stages.index import ensure_index, problems_error

    cat = Catalog.load(catalog)
    start = time.monotonic()
    with progress_bar("index", "scene") as bar:
        idx, built = ensure_index(cat, source, rebuild=rebuild, on_progress=bar_updater(bar, "scenes"))
    counts = {s: int((idx.splits == s).sum()) for s in ("train", "val")}
    excluded = len(idx) - sum(counts.values())
    problems = idx.meta.extra.get("problems", [])
    verb = f"built in {time.monotonic() - start:.1f} s" if built else "up to date"
    console.print(
        f"index of [bold]{idx.meta.source}[/]: {len(idx)} keyframes ({counts['train']} train, {counts['val']} val"
        + (f", {excluded} outside pretraining" if excluded else "")
        + f") -> {idx.path} ({verb})",
        highlight=False,
    )
    for scene in idx.meta.extra.get("empty_scenes", []):
        console.print(f"[yellow]warning:[/] scene {scene} has no keyframes: left out of the splits", highlight=False)
    error = problems_error(idx)
    if error:
        raise error
    if problems:
        shown = "".join(f"\n  {p}" for p in problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        console.print(f"[yellow]warning:[/] {len(problems)} keyframe(s) left out (allow_missing):{shown}", highlight=False)


WorkersOption = Annotated[
    int, typer.Option("--workers", "-j", min=0, help="Dask worker processes of the local cluster (0: one per core).")
]
AddressOption = Annotated[
    Optional[str],
    typer.Option("--dask-address", help="Use a running Dask scheduler (e.g. tcp://10.0.0.5:8786) instead of a local cluster.", show_default=False),
]
BatchOption = Annotated[int, typer.Option("--batch-rows", min=0, help="Keyframes per Dask task (0: automatic).")]


def _up_to_date(cat, stages: list[str], source) -> list[dict]:
    """The summaries of the stages with nothing to compute, read from their stores alone."""
    from pipeline.stages.index import ensure_index
    from pipeline.store.runner import up_to_date

    index, _ = ensure_index(cat, source)
    found = (up_to_date(cat, stage, source, index) for stage in stages)
    return [summary.__dict__ for summary in found if summary is not None]


def _run(stages: list[str], catalog, source, workers: int, dask_address, batch_rows: int) -> None:
    """Run stages as the Prefect ``prep`` flow with a progress bar per stage; print a summary.
    Stages whose stores are already complete are reported and left out before Prefect's server
    or a Dask cluster starts: with nothing to compute, neither starts."""
    from pipeline.stages import Catalog

    start = time.monotonic()
    cat = Catalog.load(catalog)  # fail fast, before Prefect and Dask start
    for stage in stages:
        cat.artifact(stage, source)
    order = list(stages)
    done = _up_to_date(cat, stages, source)
    stages = [stage for stage in stages if stage not in {s["artifact"] for s in done}]
    if not stages:
        _print_summaries(done)
        console.print(f"nothing to compute: every store is complete (checked in {time.monotonic() - start:.1f} s)", highlight=False)
        return
    from flows.settings import configure_prefect, quiet_run_logs

    configure_prefect()
    quiet_run_logs()
    from flows import progress
    from flows.config import DaskConfig, PrepConfig
    from flows.prep import prep
    from pipeline.procs import reaper
    from pipeline.store.runner import StageFailed

    config = PrepConfig(
        catalog=str(cat.path), source=source, stages=stages, dask=DaskConfig(address=dask_address, workers=workers), batch_rows=batch_rows
    )
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=max(total, 1))
        bar.update(tasks[stage], completed=done if total else 1, description=stage)

    failure = None
    # the reaper: Prefect's temporary API server and the Dask processes must not outlive this
    # command when it is killed (SIGKILL or SIGTERM run no code here to stop them)
    with reaper(), progress_bar("prep", "keyframe", parts=(6, "image")) as bar, progress.listening(update):
        try:
            summaries = prep(config)
        except StageFailed as exc:
            failure, summaries = exc, [s.__dict__ for s in exc.summaries]
    _print_summaries(sorted(done + summaries, key=lambda s: order.index(s["artifact"]) if s["artifact"] in order else len(order)))
    if failure:
        raise failure
    console.print(f"done in {time.monotonic() - start:.1f} s; `hvd catalog show` lists the stores", highlight=False)


def _print_summaries(summaries: list[dict]) -> None:
    for s in summaries:
        for note in s.get("notes", []):
            console.print(f"{s['artifact']}: {note}", highlight=False, style="yellow" if "RANDOM" in note else None)
        state = "complete" if s["complete"] else "[yellow]incomplete[/]"
        console.print(
            f"{s['artifact']}: {s['computed']} computed, {s['skipped']} already done, {len(s['failed'])} failed "
            f"of {s['total']} keyframes -> {s['path']} ({state})",
            highlight=False,
        )


def _prep_command(name: str, stages: list[str], doc: str) -> None:
    """Register ``hvd prep NAME``, running ``stages`` with the shared options."""

    def command(
        catalog: CatalogOption = None,
        source: SourceOption = None,
        workers: WorkersOption = 0,
        dask_address: AddressOption = None,
        batch_rows: BatchOption = 0,
    ) -> None:
        _run(stages, catalog, source, workers, dask_address, batch_rows)

    command.__doc__ = doc + _COMMON
    app.command(name=name)(command)


_COMMON = """

    Runs as a Prefect flow whose tasks (batches of keyframes) go to Dask: a local cluster, or the
    scheduler given by --dask-address. Only keyframes not yet done for this artifact's fingerprint
    are computed, so a killed run resumes and a grown dataset computes only its new keyframes; each
    keyframe is written to its own chunks and marked done last. A keyframe whose files are missing
    or corrupt fails alone: the command names the sample and file, exits non-zero, and a re-run
    computes just the failed keyframes. The stores are checked first: stages with nothing left to
    compute are reported as such, and when no stage has anything to compute the command returns
    without starting Prefect or Dask.
    """

_prep_command(
    "superpixels",
    ["superpixels"],
    "Superpixels of every camera image by the catalog's algorithm (OpenCV's SLIC at quarter resolution by\n"
    "    default; skimage_slic: the reference's scikit-image SLIC, n_segments 150, compactness 6, sigma 3),\n"
    "    relabelled densely, with the segment count per image.",
)
_prep_command(
    "correspondences",
    ["correspondences"],
    "Point-pixel pairings of every keyframe and camera: point index (after the point-range filter),\n"
    "    u, v in original pixels and depth, through the ego poses at the LiDAR and at each camera time.",
)
_prep_command(
    "depth-targets",
    ["depth_targets"],
    "Depth supervision of the teacher's depth net: per camera image, u, v (original pixels) and depth of\n"
    "    every LiDAR point at 1-60 m (optionally accumulated from the K nearest sweeps, motion-compensated);\n"
    "    training min-pools them onto the augmented teacher grid.",
)
_prep_command(
    "teacher-cache",
    ["teacher_cache"],
    "Frozen image-encoder features (ResNet-50 or MobileNetV2, dilated) of every camera image at the\n"
    "    configured input size (float16, one chunk per image, optional PCA fitted once on a sample), from\n"
    "    the checkpoint named in the catalog (torchvision, MoCo, SwAV, DeepCluster-v2, DINO; torchvision's\n"
    "    MobileNetV2); uses a GPU when one is present.",
)
_prep_command(
    "all",
    list(PREP_STAGES),
    "Every preprocessing stage in dependency order: superpixels, correspondences, depth targets,\n"
    "    teacher cache.\n\n"
    "    One Dask cluster serves all stages; a stage with failed keyframes does not stop the others.",
)
